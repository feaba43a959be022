//! The binary's commands and its refusals: every bad input exits non-zero, says what is wrong,
//! and writes nothing.

mod common;

use std::path::Path;

use common::{ldm_run, repo, text};

fn runs_written(runs: &Path) -> bool {
    runs.exists()
        && std::fs::read_dir(runs)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
}

#[test]
fn plan_reports_the_seed_parameter_counts_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let exp = repo().join("experiments/mnist_kl_f4_seed.toml");
    let out = ldm_run(
        tmp.path(),
        &[
            "plan",
            exp.to_str().unwrap(),
            "--runs-dir",
            runs.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("params vae.autoencoder: 16,747,237"),
        "{stdout}"
    );
    assert!(stdout.contains("params ldm.unet: 25,847,424"), "{stdout}");
    assert!(
        stdout.contains("stage vae     autoencoder  needs: -"),
        "{stdout}"
    );
    assert!(
        stdout.contains("stage ldm     diffusion    needs: vae"),
        "{stdout}"
    );
    assert!(
        stdout.contains("[stages.vae]"),
        "prints the resolved TOML: {stdout}"
    );
    assert!(stdout.contains("train 30000 steps"), "{stdout}");
    assert!(!runs.exists(), "plan must not write anything");
}

#[test]
fn plan_counts_the_classifier_and_orders_the_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = repo().join("experiments/smoke.toml");
    let runs = tmp.path().join("runs");
    let out = ldm_run(
        tmp.path(),
        &[
            "plan",
            exp.to_str().unwrap(),
            "--runs-dir",
            runs.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // conv 1->32, 32->32, 32->64, 64->64 (3x3 + bias), 4096->128, 128->10.
    assert!(
        stdout.contains("params clf.classifier: 590,698"),
        "{stdout}"
    );
    let order: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("stage "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    let at = |s: &str| order.iter().position(|o| *o == s).unwrap();
    assert!(
        at("eval") > at("ldm") && at("eval") > at("clf"),
        "{order:?}"
    );
    assert!(
        stdout.contains("samples = 64") && stdout.contains("guidance_sweep = [1.0]"),
        "{stdout}"
    );
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let out = ldm_run(&repo(), &["schema"]);
    assert!(out.status.success(), "{}", text(&out));
    let committed = std::fs::read_to_string(repo().join("schemas/experiment.schema.json")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}

/// Runs the smoke experiment with extra arguments; it must fail before writing any run.
fn refused(extra: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let exp = repo().join("experiments/smoke.toml");
    let mut args = vec![exp.to_str().unwrap(), "--runs-dir", runs.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = ldm_run(tmp.path(), &args);
    assert!(!out.status.success(), "should fail: {}", text(&out));
    assert!(
        !runs_written(&runs),
        "nothing may be written: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn bad_configuration_is_refused_before_anything_is_written() {
    let err = refused(&["--set", "autoencoder.ch=0"]);
    assert!(
        err.contains("key `autoencoder.ch`: must be at least 1"),
        "{err}"
    );
    assert!(err.contains("nothing was run"), "{err}");
    let err = refused(&["--set", "nosuch.key=1"]);
    assert!(err.contains("key `nosuch`: unknown key"), "{err}");
}

#[test]
fn missing_experiment_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = ldm_run(tmp.path(), &["missing.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.toml does not exist"), "{err}");
}

#[test]
fn missing_dataset_files_say_where_and_how() {
    let empty = tempfile::tempdir().unwrap();
    let root = format!("dataset.root=\"{}\"", empty.path().display());
    let err = refused(&["--set", &root, "--set", "dataset.download=false"]);
    assert!(
        err.contains("files missing: train-images-idx3-ubyte"),
        "{err}"
    );
    assert!(
        err.contains(&empty.path().display().to_string()),
        "names the folder: {err}"
    );
    assert!(
        err.contains("LDM_DATA_DIR"),
        "says how to provide them: {err}"
    );
}

#[test]
fn corrupt_dataset_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for f in ldm_run::data::files::MNIST.all() {
        let mut raw = common::mnist_raw(f.name);
        if f.name == "t10k-labels-idx1-ubyte" {
            raw[200] ^= 1;
        }
        std::fs::write(dir.path().join(f.name), raw).unwrap();
    }
    let root = format!("dataset.root=\"{}\"", dir.path().display());
    let err = refused(&["--set", &root]);
    assert!(err.contains("t10k-labels-idx1-ubyte is corrupt"), "{err}");
    assert!(
        err.contains("expected 27ae3e4e09519cfbb04c329615203637"),
        "{err}"
    );
}

#[test]
fn unwritable_runs_dir_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let exp = repo().join("experiments/smoke.toml");
    let out = ldm_run(
        tmp.path(),
        &[exp.to_str().unwrap(), "--runs-dir", file.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot create the run directory"), "{err}");
    assert!(err.contains("--runs-dir"), "{err}");
}

#[test]
fn ls_lists_a_run_with_a_damaged_manifest_as_damaged() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("runs/exp/2026-01-01T00-00-00");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("manifest.json"), b"{ truncated").unwrap();
    let out = ldm_run(tmp.path(), &["ls", "runs"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("exp") && stdout.contains("damaged"),
        "{stdout}"
    );
    assert!(stdout.contains("manifest unreadable"), "{stdout}");
    let asked = ldm_run(tmp.path(), &["ls", "runs", "--metrics", "accuracy,psnr"]);
    assert!(!asked.status.success(), "{}", text(&asked));
    assert!(
        text(&asked).contains("no run has a metric 'accuracy'; the runs have: none yet"),
        "{}",
        text(&asked)
    );
    let json = ldm_run(tmp.path(), &["ls", "runs", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(rows[0]["status"], "damaged");
    assert!(
        rows[0]["damage"]
            .as_str()
            .unwrap()
            .contains("manifest.json")
    );
}
