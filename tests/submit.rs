//! `ldm-run submit --slurm` without a cluster: the script it prints, its refusals (nothing
//! written), a missing or failing `sbatch`, and a stand-in `sbatch` that takes the job.
//! tests/slurm.rs submits to a real Slurm.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{data_dir, repo, text};

/// A sweep of two smoke variants beside a runs folder, in a fresh temporary folder.
fn sweep_folder() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let base = toml::Value::String(repo().join("experiments/smoke.toml").display().to_string());
    std::fs::write(
        tmp.path().join("sweep.toml"),
        format!(
            "extends = {base}\n[experiment]\nname = \"smoke_sweep\"\n\
             [sweep]\n\"stages.ldm.lr\" = [1e-3, 2e-3]\n"
        ),
    )
    .unwrap();
    tmp
}

fn submit(cwd: &Path, path_env: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ldm-run"));
    cmd.arg("submit")
        .arg("--slurm")
        .args(args)
        .current_dir(cwd)
        .env("LDM_DATA_DIR", data_dir());
    if let Some(p) = path_env {
        cmd.env("PATH", p);
    }
    cmd.output().expect("the ldm-run binary runs")
}

/// A folder holding an executable `sbatch` with this shell body.
fn fake_sbatch(dir: &Path, body: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let path = bin.join("sbatch");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn with_system_path(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn dry_run_prints_one_array_task_per_member_and_writes_nothing() {
    let tmp = sweep_folder();
    let out = submit(
        tmp.path(),
        None,
        &[
            "--dry-run",
            "sweep.toml",
            "--runs-dir",
            "runs",
            "--gpus",
            "1",
            "--partition",
            "gpu",
            "--time",
            "2:00:00",
            "--cpus-per-task",
            "4",
            "--set",
            "stages.vae.steps=5",
            "--no-reuse",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let script = String::from_utf8_lossy(&out.stdout);
    let runs = tmp.path().join("runs");
    let cwd = tmp.path().canonicalize().unwrap();
    for line in [
        "#!/bin/bash".to_string(),
        "#SBATCH --job-name=smoke_sweep".into(),
        "#SBATCH --array=0-1".into(),
        "#SBATCH --partition=gpu".into(),
        "#SBATCH --time=2:00:00".into(),
        "#SBATCH --gpus=1".into(),
        "#SBATCH --cpus-per-task=4".into(),
        "  0) set -- sweep.toml --member smoke_sweep-lr0.001 ;;".into(),
        "  1) set -- sweep.toml --member smoke_sweep-lr0.002 ;;".into(),
        format!(
            "exec {} \"$@\" --runs-dir {} --set stages.vae.steps=5 --device cuda --no-reuse",
            env!("CARGO_BIN_EXE_ldm-run"),
            std::path::absolute(tmp.path().join("runs"))
                .unwrap()
                .display()
        ),
    ] {
        assert!(
            script.lines().any(|l| l == line),
            "no line `{line}` in:\n{script}"
        );
    }
    let cd = script.lines().find(|l| l.starts_with("cd ")).unwrap();
    assert_eq!(
        Path::new(&cd[3..]).canonicalize().unwrap(),
        cwd,
        "tasks run in the submitting folder"
    );
    let output = script
        .lines()
        .find(|l| l.starts_with("#SBATCH --output="))
        .unwrap();
    assert!(
        output.starts_with(&format!(
            "#SBATCH --output={}/slurm/",
            std::path::absolute(&runs).unwrap().display()
        )) && output.ends_with("-%A_%a.out"),
        "{output}"
    );
    assert!(!runs.exists(), "--dry-run must write nothing");
}

#[test]
fn bad_experiments_are_refused_before_anything_is_written() {
    let tmp = sweep_folder();
    let fake = fake_sbatch(tmp.path(), "echo 1");
    let out = submit(
        tmp.path(),
        Some(&with_system_path(&fake)),
        &[
            "sweep.toml",
            "missing.toml",
            "--runs-dir",
            "runs",
            "--set",
            "stages.ldm.stepz=3",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("stages.ldm.stepz"), "{stderr}");
    assert!(stderr.contains("did you mean `steps`"), "{stderr}");
    assert!(stderr.contains("missing.toml"), "{stderr}");
    assert!(stderr.contains("nothing was submitted"), "{stderr}");
    assert!(!tmp.path().join("runs").exists(), "{}", text(&out));

    let out = submit(tmp.path(), None, &["sweep.toml", "--time", "2 hours"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a Slurm time limit"));
}

#[test]
fn missing_sbatch_is_a_clear_error() {
    let tmp = sweep_folder();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = submit(
        tmp.path(),
        Some(empty.to_str().unwrap()),
        &["sweep.toml", "--runs-dir", "runs"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`sbatch` is not installed"), "{stderr}");
    assert!(stderr.contains("apt-get install"), "{stderr}");
    assert!(!tmp.path().join("runs").exists(), "{}", text(&out));
}

#[test]
fn sbatch_refusal_is_reported_with_its_stderr() {
    let tmp = sweep_folder();
    let fake = fake_sbatch(
        tmp.path(),
        "echo 'sbatch: error: invalid partition specified: nope' >&2\nexit 1",
    );
    let out = submit(
        tmp.path(),
        Some(&with_system_path(&fake)),
        &["sweep.toml", "--runs-dir", "runs", "--partition", "nope"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sbatch refused the job"), "{stderr}");
    assert!(
        stderr.contains("invalid partition specified: nope"),
        "{stderr}"
    );
    assert!(
        stderr.contains(".sbatch"),
        "names the kept script: {stderr}"
    );
}

#[test]
fn submits_the_saved_script_and_prints_the_job_id() {
    let tmp = sweep_folder();
    let fake = fake_sbatch(
        tmp.path(),
        "printf '%s\\n' \"$@\" > \"$(dirname \"$0\")/args\"\necho '4242;cluster'",
    );
    let out = submit(
        tmp.path(),
        Some(&with_system_path(&fake)),
        &["sweep.toml", "--runs-dir", "runs"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "4242\n");
    let args = std::fs::read_to_string(fake.join("args")).unwrap();
    let args: Vec<&str> = args.lines().collect();
    assert_eq!(args.len(), 2, "{args:?}");
    assert_eq!(args[0], "--parsable");
    let script_path = Path::new(args[1]);
    assert_eq!(
        script_path.parent().unwrap(),
        std::path::absolute(tmp.path().join("runs/slurm")).unwrap()
    );
    assert!(args[1].ends_with(".sbatch"), "{args:?}");
    let script = std::fs::read_to_string(script_path).unwrap();
    assert!(script.contains("#SBATCH --array=0-1\n"), "{script}");
    let stem = script_path.file_stem().unwrap().to_string_lossy();
    assert!(
        script.contains(&format!("/runs/slurm/{stem}-%A_%a.out\n")),
        "the logs are named after the script: {script}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("submitted Slurm array job 4242: 2 tasks"),
        "{stderr}"
    );

    // A second submission in the same second gets its own script.
    let out = submit(
        tmp.path(),
        Some(&with_system_path(&fake)),
        &["sweep.toml", "--runs-dir", "runs"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let scripts = std::fs::read_dir(tmp.path().join("runs/slurm"))
        .unwrap()
        .count();
    assert_eq!(scripts, 2);
}

#[test]
fn unknown_member_lists_the_members() {
    let tmp = sweep_folder();
    let out = common::ldm_run(
        tmp.path(),
        &[
            "sweep.toml",
            "--member",
            "smoke_sweep-lr9",
            "--runs-dir",
            "runs",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("smoke_sweep-lr0.001, smoke_sweep-lr0.002"),
        "{stderr}"
    );
    assert!(!tmp.path().join("runs").exists());
}
