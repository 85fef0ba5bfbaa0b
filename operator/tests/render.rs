//! `llorch-operator render` prints the children of a ModelWorker exactly
//! as committed: a change to how children are built shows here as a diff
//! of the golden files, so it is made on purpose or not at all. The
//! fixtures set every field the children depend on (`everything.yaml`),
//! each model source (`sources.yaml`, `host-file.yaml`) and the shipped
//! samples.
//!
//! After an intended change: `LLORCH_UPDATE_GOLDEN=1 cargo test -p
//! llorch-operator --test render` rewrites them; review the diff.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn render(input: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_llorch-operator"))
        .arg("render")
        .arg("-f")
        .arg(input)
        .args(["--allowed-host-paths", "/srv/models"])
        .env_remove("LLORCH_WORKER_IMAGE")
        .env_remove("LLORCH_WORKER_CPU_IMAGE")
        .env_remove("LLORCH_REPORT_URL")
        .output()
        .expect("llorch-operator runs");
    assert!(
        out.status.success(),
        "{}: {}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn children_render_as_committed() {
    let fixtures = root().join("tests/fixtures/render");
    let samples = root().join("../manifests/samples");
    let inputs = [
        fixtures.join("everything.yaml"),
        fixtures.join("sources.yaml"),
        fixtures.join("host-file.yaml"),
        samples.join("cpu-modelworker.yaml"),
        samples.join("gpu-modelworker.yaml"),
        samples.join("two-replicas-secured.yaml"),
    ];
    let update = std::env::var_os("LLORCH_UPDATE_GOLDEN").is_some();
    for input in inputs {
        let stem = input
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a file name");
        let golden = fixtures.join(format!("{stem}.golden.yaml"));
        let got = render(&input);
        if update {
            std::fs::write(&golden, &got).expect("golden written");
            continue;
        }
        let want = std::fs::read_to_string(&golden).expect("golden file");
        if got != want {
            let line = got
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .map_or(got.lines().count().min(want.lines().count()), |i| i);
            panic!(
                "{stem}: rendered children differ from {} at line {}:\n got: {:?}\nwant: {:?}",
                golden.display(),
                line + 1,
                got.lines().nth(line),
                want.lines().nth(line)
            );
        }
    }
}
