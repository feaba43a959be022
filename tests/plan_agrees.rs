//! `ldm-run plan` shows every stage's action exactly as `ldm-run` then takes it: for a sweep
//! whose members share an autoencoder (the second member reuses the first's), and for an
//! interrupted run (finished stages done, the interrupted one resumed at its checkpoint).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{data_dir, ldm_run, repo, text};

/// The `stage <name> <kind> needs: ... <action>` lines of a plan, as (name, action).
fn planned(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("stage "))
        .map(|l| {
            let name = l.split_whitespace().next().unwrap().to_string();
            let action = l.split_once("needs: ").unwrap().1;
            let action = action.split_once("  ").map_or(action, |(_, a)| a).trim();
            (name, action.to_string())
        })
        .collect()
}

/// Whether the run announced `stage: action` on stderr.
fn announced(stderr: &str, stage: &str, action: &str) -> bool {
    stderr.lines().any(|l| l == format!("{stage}: {action}"))
}

fn sweep_file(dir: &Path) -> PathBuf {
    let path = dir.join("sweep.toml");
    std::fs::write(
        &path,
        format!(
            "extends = \"{}\"\n[stages.ldm]\nsteps = 6\n[stages.vae]\nsteps = 6\n\
             [stages.clf]\nsteps = 4\n[stages.eval]\nsamples = 16\n\
             [sweep]\n\"stages.ldm.lr\" = [1e-3, 5e-4]\n",
            repo().join("experiments/smoke.toml").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn a_sweep_plans_its_shared_autoencoder_as_reused_and_runs_it_so() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let file = sweep_file(tmp.path());
    let (file, runs_s) = (file.to_str().unwrap(), runs.to_str().unwrap());

    let plan = ldm_run(tmp.path(), &["plan", file, "--runs-dir", runs_s]);
    assert!(plan.status.success(), "{}", text(&plan));
    let stdout = String::from_utf8_lossy(&plan.stdout);
    let members: Vec<&str> = stdout.split("# experiment ").skip(1).collect();
    assert_eq!(members.len(), 2, "{stdout}");
    let first = planned(members[0]);
    let second = planned(members[1]);
    assert!(members[0].starts_with("smoke-lr0.001 "), "{stdout}");
    assert_eq!(first[0], ("vae".into(), "train 6 steps".into()));
    assert_eq!(
        second[0],
        (
            "vae".into(),
            "reuse the same stage of `smoke-lr0.001`, trained earlier by this command".into()
        )
    );
    assert_eq!(second[1], ("ldm".into(), "train 6 steps".into()));
    assert_eq!(
        second[3],
        (
            "clf".into(),
            "reuse the same stage of `smoke-lr0.001`, trained earlier by this command".into()
        )
    );
    assert!(!runs.exists(), "plan writes nothing");

    let run = ldm_run(tmp.path(), &[file, "--runs-dir", runs_s]);
    assert!(run.status.success(), "{}", text(&run));
    let stderr = String::from_utf8_lossy(&run.stderr);
    for (stage, action) in first.iter().chain(&second) {
        assert!(
            announced(&stderr, stage, action),
            "the run did not announce `{stage}: {action}` as planned\n{stderr}"
        );
    }
    let manifest = |member: &str| -> serde_json::Value {
        let dir = std::fs::read_dir(runs.join(member))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
    };
    let m = manifest("smoke-lr0.0005");
    assert!(
        m["stages"]["vae"]["reused_from"]
            .as_str()
            .unwrap()
            .contains("smoke-lr0.001"),
        "{m}"
    );
    assert!(m["stages"]["ldm"]["reused_from"].is_null(), "{m}");
    assert!(manifest("smoke-lr0.001")["stages"]["vae"]["reused_from"].is_null());

    // Planned again, the finished sweep has nothing left to do, and running trains nothing.
    let again = ldm_run(tmp.path(), &["plan", file, "--runs-dir", runs_s]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(
        stdout
            .matches("with these very stages: nothing to train")
            .count(),
        2,
        "{stdout}"
    );
    let rerun = ldm_run(tmp.path(), &[file, "--runs-dir", runs_s]);
    assert!(rerun.status.success(), "{}", text(&rerun));
    assert_eq!(
        String::from_utf8_lossy(&rerun.stderr)
            .matches("nothing to train")
            .count(),
        2
    );
}

#[test]
fn an_interrupted_run_plans_and_takes_the_same_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let exp = repo().join("experiments/smoke.toml");
    let settings = [
        "--set",
        "stages.ldm.checkpoint_every=5",
        "--set",
        "stages.ldm.keep_checkpoints=10",
    ];
    let mut child = Command::new(env!("CARGO_BIN_EXE_ldm-run"))
        .args([exp.to_str().unwrap(), "--runs-dir", runs.to_str().unwrap()])
        .args(settings)
        .current_dir(tmp.path())
        .env("LDM_DATA_DIR", data_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let run = loop {
        let found = std::fs::read_dir(runs.join("smoke"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|d| d.join("ldm/checkpoints/step-00000010.safetensors").exists());
        if let Some(run) = found {
            break run;
        }
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let dir = run.to_str().unwrap();
    let mut plan_args = vec![
        "plan",
        "--resume",
        dir,
        "--runs-dir",
        runs.to_str().unwrap(),
    ];
    plan_args.extend(settings);
    let plan = ldm_run(tmp.path(), &plan_args);
    assert!(plan.status.success(), "{}", text(&plan));
    let stages = planned(&String::from_utf8_lossy(&plan.stdout));
    assert_eq!(
        stages[0],
        ("vae".into(), "done (finished in this run)".into())
    );
    let (name, action) = &stages[1];
    assert_eq!(name, "ldm");
    let step: u64 = action
        .strip_prefix("resume at step ")
        .and_then(|a| a.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("ldm should resume: {action}"));
    assert!(step >= 10 && step.is_multiple_of(5), "{action}");
    assert_eq!(stages[2], ("sample".into(), "run".into()));

    let mut resume_args = vec!["--resume", dir, "--runs-dir", runs.to_str().unwrap()];
    resume_args.extend(settings);
    let out = ldm_run(tmp.path(), &resume_args);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (stage, action) in &stages {
        assert!(
            announced(&stderr, stage, action),
            "the resume did not announce `{stage}: {action}` as planned\n{stderr}"
        );
    }
    assert!(
        stderr.contains(&format!("ldm: resuming at step {step} of 30")),
        "{stderr}"
    );
}
