//! A sweep of two smoke variants that share their autoencoder: the autoencoder trains once,
//! both diffusion stages run, TensorBoard's HParams data shows both runs with final metrics,
//! `ldm-run ls` lists them, and running the sweep again trains nothing.

mod common;

use std::path::{Path, PathBuf};

use common::{ldm_run, read_with_tensorboard, repo, text};
use serde_json::Value;

const SWEEP: &str = r#"
extends = "SMOKE"

[stages.vae]
steps = 8

[stages.ldm]
steps = 8
sampler_steps = 2

[stages.sample]
sampler_steps = 2

[logging]
log_every = 4
sample_every = 8

[sweep]
"stages.ldm.lr" = [1e-3, 2e-3]
"#;

fn runs_of(runs: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for exp in std::fs::read_dir(runs).unwrap().flatten() {
        if exp.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        dirs.extend(
            std::fs::read_dir(exp.path())
                .unwrap()
                .flatten()
                .map(|e| e.path()),
        );
    }
    dirs.sort();
    dirs
}

fn manifest(run: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn sweep_shares_the_autoencoder_and_reruns_train_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let smoke = repo().join("experiments/smoke.toml");
    let file = tmp.path().join("sweep.toml");
    std::fs::write(&file, SWEEP.replace("SMOKE", smoke.to_str().unwrap())).unwrap();
    let runs = tmp.path().join("runs");
    let args = [file.to_str().unwrap(), "--runs-dir", runs.to_str().unwrap()];

    let plan = ldm_run(&repo(), &["plan", file.to_str().unwrap()]);
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan_text.contains("# experiment smoke-lr0.001 (stages.ldm.lr = 0.001)"),
        "{plan_text}"
    );
    assert!(
        plan_text.contains("# experiment smoke-lr0.002 (stages.ldm.lr = 0.002)"),
        "{plan_text}"
    );

    let out = ldm_run(&repo(), &args);
    assert!(out.status.success(), "{}", text(&out));
    let dirs = runs_of(&runs);
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    let manifests: Vec<Value> = dirs.iter().map(|d| manifest(d)).collect();
    let names: Vec<&str> = manifests
        .iter()
        .map(|m| m["experiment"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["smoke-lr0.001", "smoke-lr0.002"]);
    let vae_reused: Vec<bool> = manifests
        .iter()
        .map(|m| m["stages"]["vae"]["reused_from"].is_string())
        .collect();
    assert_eq!(vae_reused, vec![false, true], "the autoencoder trains once");
    for m in &manifests {
        assert_eq!(m["status"], "finished");
        assert!(
            m["stages"]["ldm"]["reused_from"].is_null(),
            "each diffusion stage runs"
        );
        assert_eq!(
            m["stages"]["vae"]["fingerprint"],
            manifests[0]["stages"]["vae"]["fingerprint"]
        );
    }
    assert_ne!(
        manifests[0]["stages"]["ldm"]["fingerprint"],
        manifests[1]["stages"]["ldm"]["fingerprint"]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("vae: reusing the finished stage"),
        "{stderr}"
    );

    // TensorBoard's HParams plugin sees both runs with their lr and final metrics.
    let tb = read_with_tensorboard(&runs);
    let groups = tb["hparams"]["session_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    let mut lrs: Vec<f64> = groups
        .iter()
        .map(|g| g["hparams"]["stages.ldm.lr"].as_f64().unwrap())
        .collect();
    lrs.sort_by(f64::total_cmp);
    assert_eq!(lrs, vec![0.001, 0.002]);
    for g in groups {
        for metric in ["vae/test/psnr", "ldm/loss/mse"] {
            assert!(g["metrics"][metric]["value"].is_number(), "{metric} in {g}");
        }
        assert_eq!(g["sessions"][0]["status"], "STATUS_SUCCESS", "{g}");
    }

    let ls = ldm_run(&repo(), &["ls", runs.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&ls.stdout);
    assert!(
        table.contains("smoke-lr0.001") && table.contains("smoke-lr0.002"),
        "{table}"
    );
    assert!(table.contains("(reused: vae,clf)"), "{table}");
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("eval/accuracy")
            && header.contains("eval/frechet")
            && header.contains("vae/test/psnr"),
        "the default metric columns: {table}"
    );
    let chosen = ldm_run(
        &repo(),
        &[
            "ls",
            runs.to_str().unwrap(),
            "--metrics",
            "test/ssim,frechet",
        ],
    );
    let chosen = String::from_utf8_lossy(&chosen.stdout);
    assert!(
        chosen
            .lines()
            .next()
            .unwrap()
            .ends_with("vae/test/ssim  eval/frechet")
            && !chosen.contains("accuracy"),
        "{chosen}"
    );
    let json: Value =
        serde_json::from_slice(&ldm_run(&repo(), &["ls", runs.to_str().unwrap(), "--json"]).stdout)
            .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert!(json[0]["metrics"]["vae/test/psnr"].is_number(), "{json}");

    // Again: nothing is trained, no run is added.
    let again = ldm_run(&repo(), &args);
    assert!(again.status.success(), "{}", text(&again));
    let err = String::from_utf8_lossy(&again.stderr);
    assert_eq!(err.matches("nothing to train").count(), 2, "{err}");
    assert_eq!(runs_of(&runs).len(), 2);
}
