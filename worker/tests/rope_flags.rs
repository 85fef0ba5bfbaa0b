//! `--rope-scaling`, `--rope-scale`, `--rope-freq-base` and
//! `--yarn-orig-ctx` override the model file's RoPE settings: a plain model
//! given YaRN on the command line computes exactly what the same model
//! with YaRN in its metadata computes, and bad values are refused.

mod common;

use std::path::{Path, PathBuf};

fn synth(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut args = vec![
        "synth",
        "--arch",
        "qwen2",
        "--type",
        "F32",
        "--out",
        path.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    let out = common::worker(&args);
    assert!(
        out.status.success(),
        "synth: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

fn logits(model: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "logits",
        "--model",
        model.to_str().expect("utf-8 path"),
        "--tokens",
        "1,300,301,302,303,304,305,306,307,308,309,310",
        "--all-positions",
        "--json",
        "--ctx-size",
        "256",
        "--kv-type",
        "f32",
        "--threads",
        "2",
    ];
    args.extend_from_slice(extra);
    let out = common::worker(&args);
    assert!(
        out.status.success(),
        "logits {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

#[test]
fn rope_flags_override_the_file_and_bad_values_are_refused() {
    let dir = std::env::temp_dir().join(format!("llorch-rope-flags-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    // The same weights; one file says YaRN x4 from an original 64.
    let plain = synth(&dir, "plain.gguf", &[]);
    let yarn = synth(&dir, "yarn.gguf", &["--rope-scaling", "yarn"]);

    let from_file = logits(&yarn, &[]);
    let unscaled = logits(&plain, &[]);
    assert_ne!(from_file, unscaled, "YaRN changes the logits");
    let from_flags = logits(
        &plain,
        &[
            "--rope-scaling",
            "yarn",
            "--rope-scale",
            "4",
            "--yarn-orig-ctx",
            "64",
        ],
    );
    assert_eq!(
        from_flags, from_file,
        "flags and metadata give the same model"
    );
    // Flags win over the file: `none` undoes its scaling.
    assert_eq!(logits(&yarn, &["--rope-scaling", "none"]), unscaled);
    assert_ne!(logits(&plain, &["--rope-freq-base", "500000"]), unscaled);

    for (flag, value, why) in [
        ("--rope-scale", "0", "is not a positive number"),
        ("--rope-freq-base", "-1", "is not a positive number"),
        ("--rope-scaling", "ntk", "invalid value"),
    ] {
        let arg = format!("{flag}={value}");
        let out = common::worker(&[
            "logits",
            "--model",
            plain.to_str().expect("utf-8 path"),
            "--tokens",
            "1,2",
            "--json",
            &arg,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(why), "{flag} {value}: {stderr}");
    }
    // Accepted by the parser, refused by the model: a clear load error.
    let out = common::worker(&[
        "logits",
        "--model",
        plain.to_str().expect("utf-8 path"),
        "--tokens",
        "1,2",
        "--json",
        "--rope-scaling",
        "yarn",
        "--yarn-orig-ctx",
        "0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("original context of 0"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}
