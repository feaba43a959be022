//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod http;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ldm_run::data::{DatasetConfig, DatasetName, files};
use serde_json::Value;

/// The repository's folder.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The data folder the tests use, found the way ldm-run finds data: `$LDM_DATA_DIR` when set
/// (CI points it at the offline copy in ../shared/data), else `data/` in the repository. The
/// MNIST files are downloaded into it (MD5-checked) the first time if they are missing.
pub fn data_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = match std::env::var_os("LDM_DATA_DIR") {
            Some(d) if !d.is_empty() => std::path::absolute(PathBuf::from(d)).unwrap(),
            _ => repo().join("data"),
        };
        let mnist = DatasetConfig {
            name: DatasetName::Mnist,
            ..DatasetConfig::default()
        };
        ldm_run::data::dataset::preflight(&mnist, dir.to_str()).unwrap_or_else(|e| {
            panic!(
                "the tests need MNIST in {}/mnist (set LDM_DATA_DIR to a folder holding it, \
                 or let it download): {e}",
                dir.display()
            )
        });
        dir
    })
    .clone()
}

/// The MNIST file `name` (without `.gz`) in the tests' data folder, raw or gzipped.
pub fn mnist_file(name: &str) -> PathBuf {
    files::locate(&[data_dir().join("mnist")], name)
        .unwrap_or_else(|| panic!("{name} is missing from {}/mnist", data_dir().display()))
}

/// The gzip bytes of MNIST file `name` (compressed here when the copy is raw).
pub fn mnist_gz(name: &str) -> Vec<u8> {
    let path = mnist_file(name);
    let bytes = std::fs::read(&path).unwrap();
    if path.extension().is_some_and(|e| e == "gz") {
        return bytes;
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&bytes).unwrap();
    enc.finish().unwrap()
}

/// The decompressed content of MNIST file `name`.
pub fn mnist_raw(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&mnist_gz(name)[..])
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Runs the `ldm-run` binary in `cwd` with `LDM_DATA_DIR` pointing at the tests' data.
pub fn ldm_run(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ldm-run"))
        .args(args)
        .current_dir(cwd)
        .env("LDM_DATA_DIR", data_dir())
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

/// The Python that reads event files: `$PYTHON`, else the virtual environment
/// `tests/setup.sh` makes when the system Python cannot take TensorBoard, else `python3`.
pub fn python() -> String {
    if let Ok(p) = std::env::var("PYTHON") {
        return p;
    }
    let venv = repo().join("target/test-python/bin/python");
    if venv.is_file() {
        return venv.display().to_string();
    }
    "python3".to_string()
}

pub fn read_with_tensorboard(logdir: &Path) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/read_events.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(logdir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{}` ({e}): this test needs Python 3 with TensorBoard: run tests/setup.sh",
                python()
            )
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        panic!("TensorBoard's Python package is missing: run tests/setup.sh\n{stderr}");
    }
    assert!(
        out.status.success(),
        "{} failed ({}); stderr:\n{stderr}\n(if tensorboard is missing: run tests/setup.sh)",
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

/// A curve as TensorBoard shows it: (run step, value) per point.
pub type Curve = Vec<(u64, f64)>;

/// Each scalar curve of `tags` in the run `run`, as TensorBoard reads it.
pub fn scalar_curves(run: &Path, tags: &[&str]) -> Vec<Curve> {
    let tb = read_with_tensorboard(run);
    tags.iter()
        .map(|tag| {
            tb["provider"]["."]["scalars"][tag]
                .as_array()
                .unwrap_or_else(|| panic!("no {tag} in {tb}"))
                .iter()
                .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
                .collect()
        })
        .collect()
}

/// Waits until `path` exists (the run reached that checkpoint).
pub fn wait_for(path: &Path, child: &mut Child) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {}",
            path.display()
        );
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "timed out waiting for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The bytes of `file` in `run` as runs that must agree compare them: a `.json` file without
/// its wall-clock timings (`seconds_per_1000`, which no two runs share), every other file as
/// it is.
pub fn comparable_bytes(run: &Path, file: &str) -> Vec<u8> {
    let bytes = std::fs::read(run.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    if !file.ends_with(".json") {
        return bytes;
    }
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("seconds_per_1000");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
    strip(&mut value);
    serde_json::to_vec(&value).unwrap()
}
