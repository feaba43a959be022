//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod http;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The repository's folder.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/data`: the real data sets CI provides beside the checkout.
pub fn shared_data() -> PathBuf {
    let dir = repo().join("../shared/data");
    assert!(
        dir.join("mnist").is_dir(),
        "the tests need the MNIST files in {} (CI checks out ../shared beside the repository)",
        dir.display()
    );
    dir
}

/// Runs the `ldm-run` binary in `cwd` with `LDM_DATA_DIR` pointing at the shared data.
pub fn ldm_run(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ldm-run"))
        .args(args)
        .current_dir(cwd)
        .env("LDM_DATA_DIR", shared_data())
        .env_remove("RUST_LOG")
        .output()
        .expect("the ldm-run binary runs")
}

/// stdout and stderr of a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

pub fn read_with_tensorboard(logdir: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_events.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(logdir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{}` ({e}): this test needs Python 3 with TensorBoard: pip install tensorboard",
                python()
            )
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        panic!("TensorBoard's Python package is missing: pip install tensorboard\n{stderr}");
    }
    assert!(
        out.status.success(),
        "{} failed ({}); stderr:\n{stderr}\n(if tensorboard is missing: pip install tensorboard)",
        script.display(),
        out.status
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "read_events.py printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
