//! The classifier stage on real MNIST: it learns, and a run resumed from a middle checkpoint
//! ends with the same bytes as the run that went straight through (weights, Adam moments and
//! the data order all come back).
//!
//! Both runs use one CPU thread: the convolution kernels sum their weight gradients over
//! threads in whatever order the threads finish, so two multi-threaded runs differ in the last
//! bits; with one thread every run is bit-identical.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{data_dir, repo, text};
use serde_json::Value;

const EXPERIMENT: &str = r#"
[experiment]
name = "clf"
seed = 3

[dataset]
name = "mnist"
train_limit = 2048
image_size = 32

[stages.clf]
kind = "classifier"
steps = 30
batch_size = 32
lr = 2e-3
checkpoint_every = 15
keep_checkpoints = 2

[logging]
log_every = 15
sample_every = 30
"#;

fn ldm_run_one_thread(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ldm-run"))
        .args(args)
        .current_dir(repo())
        .env("LDM_DATA_DIR", data_dir())
        .env("CANDLE_NUM_THREADS", "1")
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("the ldm-run binary runs")
}

fn the_run(runs: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(runs.join("clf"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

fn manifest(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn classifier_learns_and_resumes_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("clf.toml");
    std::fs::write(&file, EXPERIMENT).unwrap();
    let runs = tmp.path().join("runs");
    let args = [file.to_str().unwrap(), "--runs-dir", runs.to_str().unwrap()];
    let out = ldm_run_one_thread(&args);
    assert!(out.status.success(), "{}", text(&out));
    let run = the_run(&runs);
    let m = manifest(&run);
    assert_eq!(m["stages"]["clf"]["status"], "finished");
    // 30 steps of 32 images: far from trained, far above the 10% of guessing.
    let acc = m["stages"]["clf"]["metrics"]["test/accuracy"]
        .as_f64()
        .unwrap();
    assert!(acc > 0.5 && acc < 1.0, "test accuracy {acc}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("clf: test accuracy {:.2}% (", 100.0 * acc))
            && err.contains(" of 10000)"),
        "{err}"
    );
    let ckpts = run.join("clf/checkpoints");
    let last = ckpts.join("step-00000030.safetensors");
    let want = std::fs::read(&last).unwrap();

    // Pretend the run stopped after its step-15 checkpoint.
    std::fs::remove_file(&last).unwrap();
    let mut m = m;
    m["status"] = "interrupted".into();
    m["stages"]["clf"]["status"] = "interrupted".into();
    m["stages"]["clf"]["steps_done"] = 15.into();
    std::fs::write(run.join("manifest.json"), m.to_string()).unwrap();
    let out = ldm_run_one_thread(&[
        "--resume",
        run.to_str().unwrap(),
        "--runs-dir",
        runs.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("clf: resuming at step 15 of 30"),
        "{}",
        text(&out)
    );
    assert!(
        std::fs::read(&last).unwrap() == want,
        "the resumed run's final checkpoint differs from the uninterrupted run's"
    );
    let resumed = manifest(&run);
    assert_eq!(resumed["stages"]["clf"]["status"], "finished");
    assert_eq!(
        resumed["stages"]["clf"]["metrics"]["test/accuracy"].as_f64(),
        Some(acc)
    );
}
