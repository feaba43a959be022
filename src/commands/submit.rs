//! `ldm-run submit --slurm <EXPERIMENT.toml>...`: checks every experiment as running would,
//! then submits one Slurm array job whose task i runs experiment (or sweep member) i on a shared
//! runs folder. The script is kept under `<runs>/slurm/`, beside the tasks' logs.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};

use crate::environment::Environment;
use crate::plan::RunIndex;
use crate::plan::checks::MemoryCheck;
use crate::slurm::{ArrayJob, Resources, SLURM_DIR, Task, parse_job_id};

/// What `submit` was asked to do.
#[derive(Debug, Clone)]
pub struct SubmitArgs {
    pub patterns: Vec<String>,
    /// `--set` arguments, passed on to every task.
    pub sets: Vec<String>,
    /// `--device`; `cuda` when GPUs are asked for and no device is given.
    pub device: Option<String>,
    pub runs_dir: PathBuf,
    pub no_reuse: bool,
    pub resources: Resources,
    pub dry_run: bool,
}

fn utf8<'a>(what: &str, p: &'a Path) -> anyhow::Result<&'a str> {
    p.to_str()
        .ok_or_else(|| anyhow!("{what} {} is not valid UTF-8", p.display()))
}

/// Plans every experiment (sweeps expanded) exactly as running would and builds the job; all
/// problems of all files are reported together and nothing is written. Memory is not checked
/// against this machine: the tasks run on the cluster's.
pub fn prepare(
    args: &SubmitArgs,
    env: &Environment,
    now: DateTime<Utc>,
) -> anyhow::Result<ArrayJob> {
    let device = args
        .device
        .clone()
        .or_else(|| args.resources.gpus.map(|_| "cuda".to_string()));
    let mut check_sets = args.sets.clone();
    if let Some(d) = &device {
        check_sets.push(format!("experiment.device={d}"));
    }
    let request = super::run::Request {
        patterns: args.patterns.clone(),
        sets: check_sets,
        runs_dir: args.runs_dir.clone(),
        reuse: !args.no_reuse,
        member: None,
    };
    let index = RunIndex::scan(&args.runs_dir);
    let plans = super::run::plans(
        &request,
        env,
        &index,
        MemoryCheck::Skip,
        "nothing was submitted",
    )?;
    let files = super::run::expand(&args.patterns)?;
    let mut tasks = Vec::new();
    for plan in &plans {
        let file = utf8("the experiment path", &plan.resolved.path)?;
        tasks.push(Task {
            file: file.to_string(),
            member: plan.name().to_string(),
        });
    }
    let job_name = match (files.len(), plans.first()) {
        (1, Some(first)) => first.resolved.layered.file.experiment.name.clone(),
        _ => "ldm-run".to_string(),
    };
    let workdir = std::env::current_dir().context("cannot read the current folder")?;
    let runs_dir = std::path::absolute(&args.runs_dir)
        .with_context(|| format!("cannot make {} absolute", args.runs_dir.display()))?;
    let exe = std::env::current_exe().context("cannot find the ldm-run binary's own path")?;
    let job = ArrayJob {
        job_name,
        exe: utf8("the ldm-run binary's path", &exe)?.to_string(),
        workdir: utf8("the current folder", &workdir)?.to_string(),
        runs_dir: utf8("the runs folder", &runs_dir)?.to_string(),
        log_dir: utf8("the runs folder", &runs_dir.join(SLURM_DIR))?.to_string(),
        log_prefix: now.format("%Y-%m-%dT%H-%M-%S").to_string(),
        sets: args.sets.clone(),
        device,
        no_reuse: args.no_reuse,
        resources: args.resources.clone(),
        tasks,
    };
    job.script().map_err(anyhow::Error::msg)?;
    Ok(job)
}

/// `program` on `PATH`, if it is there.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Creates `<dir>/<stamp>[-N].sbatch` (never overwriting one) and returns its path and the
/// name it took, without the extension.
fn reserve_script(dir: &Path, stamp: &str) -> anyhow::Result<(PathBuf, String)> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for n in 1.. {
        let name = if n == 1 {
            stamp.to_string()
        } else {
            format!("{stamp}-{n}")
        };
        let path = dir.join(format!("{name}.sbatch"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => return Ok((path, name)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
        }
    }
    unreachable!("the suffix loop only ends by returning")
}

/// Checks, then prints the script (`dry_run`) or writes and submits it, printing the job id.
pub fn run(args: &SubmitArgs, env: &Environment) -> anyhow::Result<()> {
    let mut job = prepare(args, env, Utc::now())?;
    if args.dry_run {
        return super::print_out(&job.script().map_err(anyhow::Error::msg)?);
    }
    let sbatch = find_on_path("sbatch").ok_or_else(|| {
        anyhow!(
            "`sbatch` is not installed (it is not on PATH): submit from a Slurm login node, or \
             install Slurm's client commands (Debian/Ubuntu: apt-get install slurm-client; a \
             whole single-machine cluster: apt-get install slurm-wlm munge)\n\
             `ldm-run submit --slurm --dry-run ...` prints the job script without submitting\n\
             nothing was submitted"
        )
    })?;
    let dir = PathBuf::from(&job.log_dir);
    let (path, name) = reserve_script(&dir, &job.log_prefix)?;
    job.log_prefix = name;
    let script = job.script().map_err(anyhow::Error::msg)?;
    std::fs::write(&path, &script).with_context(|| format!("cannot write {}", path.display()))?;
    let out = Command::new(&sbatch)
        .arg("--parsable")
        .arg(&path)
        .output()
        .with_context(|| format!("cannot run {}", sbatch.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "sbatch refused the job ({}):\n{}\nthe job script is kept at {}",
            out.status,
            stderr.trim_end(),
            path.display()
        );
    }
    let id = parse_job_id(&stdout).ok_or_else(|| {
        anyhow!(
            "sbatch printed no job id (stdout: `{}`, stderr: `{}`); the job script is {}",
            stdout.trim(),
            stderr.trim(),
            path.display()
        )
    })?;
    let n = job.tasks.len();
    eprintln!(
        "submitted Slurm array job {id}: {n} task{} ({})\n  script: {}\n  logs:   {}/{}-{id}_<task>.out\n  watch:  squeue -j {id}",
        if n == 1 { "" } else { "s" },
        job.tasks
            .iter()
            .map(|t| t.member.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        path.display(),
        job.log_dir,
        job.log_prefix,
    );
    super::print_out(&format!("{id}\n"))
}
