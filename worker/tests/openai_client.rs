//! The official `openai` Python client against a running worker, both
//! OpenAI routes, streaming and not. The interpreter comes from the
//! project's venv (`scripts/python-env.sh`, which `make test` runs and
//! exports as `LLORCH_PYTHON`).

mod common;

use std::process::Command;

#[test]
fn official_openai_client_works() {
    let python = std::env::var("LLORCH_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/llorch/venv/bin/python")
    });
    assert!(
        std::path::Path::new(&python).is_file(),
        "no Python with the openai package at {python}: run scripts/python-env.sh (make test does)"
    );
    let (mut child, base) = common::spawn_worker(&[]);
    // Wait for readiness by polling /ready through curl-free std networking.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let addr = base.trim_start_matches("http://").to_string();
    loop {
        use std::io::{Read, Write};
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            let mut resp = String::new();
            let _ = s.read_to_string(&mut resp);
            if resp.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "worker not ready");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(&base)
        .output()
        .expect("python runs");
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "openai client failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
}
