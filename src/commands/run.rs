//! `ldm-run <EXPERIMENT.toml>...`: plan every experiment first (every check, nothing written),
//! then run them in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::bail;

use super::ls::{self, RunRow};
use crate::config::error::closest;
use crate::config::{self, Resolved};
use crate::environment::Environment;
use crate::plan::checks::MemoryCheck;
use crate::plan::manifest::{Manifest, Status};
use crate::plan::{self, Plan, Planning, RunIndex};
use crate::resume::{self, ResumeRequest};
use crate::runner::{self, RunOptions, RunReport};

/// The subcommands, for a "did you mean" when a first argument is neither a file nor one.
pub const COMMANDS: &[&str] = &["plan", "ls", "bench", "submit", "sample", "schema"];

/// What `ldm-run` (and `ldm-run plan`, which shows what it would do) is asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub patterns: Vec<String>,
    pub sets: Vec<String>,
    pub runs_dir: PathBuf,
    pub reuse: bool,
    pub member: Option<String>,
}

/// Expands glob patterns (`experiments/sweeps/*.toml`); a plain path is kept as it is, so a
/// missing file is reported by the loader. A pattern that matches nothing is an error, and so
/// is a missing file whose name is close to a command's (`ldm-run pln x.toml`).
pub fn expand(patterns: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for pattern in patterns {
        if !pattern.contains(['*', '?', '[']) {
            let path = PathBuf::from(pattern);
            if !path.exists()
                && let Some(command) = closest(pattern, COMMANDS)
            {
                bail!(
                    "`{pattern}` is neither an experiment file nor a command; did you mean \
                     `ldm-run {command}`? (ldm-run --help lists the commands)"
                );
            }
            files.push(path);
            continue;
        }
        let matches: Vec<PathBuf> = glob::glob(pattern)
            .map_err(|e| anyhow::anyhow!("bad pattern `{pattern}`: {e}"))?
            .filter_map(Result::ok)
            .collect();
        if matches.is_empty() {
            bail!("pattern `{pattern}` matches no file");
        }
        files.extend(matches);
    }
    Ok(files)
}

/// Resolves every experiment and sweep member; all problems of all files are reported together.
pub fn resolve_all(
    files: &[PathBuf],
    env: &Environment,
    sets: &[String],
) -> anyhow::Result<Vec<Resolved>> {
    let mut resolved = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match config::members(f, env, sets) {
            Ok(r) => resolved.extend(r),
            Err(e) => errors.push(format!("{}: {e}", f.display())),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    let mut seen: Vec<(&str, &Path)> = Vec::new();
    for r in &resolved {
        if let Some((_, other)) = seen.iter().find(|(n, _)| *n == r.name()) {
            bail!(
                "{} and {} both name experiment `{}`; their runs would mix in one folder and \
                 --member could not tell them apart: rename one (experiment.name)",
                other.display(),
                r.path.display(),
                r.name()
            );
        }
        seen.push((r.name(), &r.path));
    }
    Ok(resolved)
}

/// Keeps only the experiment (or sweep member) named `name`; an unknown name is an error that
/// lists the names the files give.
pub fn select_member(all: Vec<Resolved>, name: &str) -> anyhow::Result<Vec<Resolved>> {
    let names: Vec<String> = all.iter().map(|r| r.name().to_string()).collect();
    let kept: Vec<Resolved> = all.into_iter().filter(|r| r.name() == name).collect();
    if kept.is_empty() {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let hint = closest(name, &refs)
            .map(|c| format!("did you mean `{c}`? "))
            .unwrap_or_default();
        bail!(
            "--member {name}: no experiment or sweep member has this name; {hint}the files give: \
             {}",
            names.join(", ")
        );
    }
    Ok(kept)
}

/// The plans of a request: every file and member resolved, checked and planned, in order.
/// `nothing` ends the message of a refusal ("nothing was run").
pub fn plans(
    req: &Request,
    env: &Environment,
    index: &RunIndex,
    memory: MemoryCheck,
    nothing: &str,
) -> anyhow::Result<Vec<Plan>> {
    let planned = (|| {
        let files = expand(&req.patterns)?;
        let mut all = resolve_all(&files, env, &req.sets)?;
        if let Some(name) = &req.member {
            all = select_member(all, name)?;
        }
        let planning = Planning {
            index,
            reuse: req.reuse,
            memory,
        };
        Ok(plan::plan_new_runs(all, &planning)?)
    })();
    planned.map_err(|e: anyhow::Error| anyhow::anyhow!("{}\n{nothing}", super::describe_error(&e)))
}

/// A stop flag raised by the first SIGINT/SIGTERM; a second one exits at once (status 130).
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))?;
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

fn options(runs_dir: &Path, reuse: bool, env: &Environment) -> RunOptions {
    RunOptions {
        runs_dir: runs_dir.to_path_buf(),
        data_dir: env.data_dir.clone(),
        reuse,
    }
}

/// Tells how to continue an interrupted run.
fn report_interrupted(report: &RunReport) {
    if report.status == Status::Interrupted {
        eprintln!(
            "interrupted; continue with: ldm-run --resume {}",
            report.dir.display()
        );
    }
}

/// Continues a run; returns whether it finished.
pub fn resume(
    req: &ResumeRequest,
    env: &Environment,
    runs_dir: &Path,
    reuse: bool,
) -> anyhow::Result<bool> {
    let stop = stop_flag()?;
    let report = resume::resume(req, env, &options(runs_dir, reuse, env), &stop)?;
    report_interrupted(&report);
    Ok(report.status == Status::Finished)
}

/// Runs the experiments; returns whether all finished.
pub fn run(req: &Request, env: &Environment) -> anyhow::Result<bool> {
    let index = RunIndex::scan(&req.runs_dir);
    let all = plans(req, env, &index, MemoryCheck::Refuse, "nothing was run")?;
    let stop = stop_flag()?;
    let opts = options(&req.runs_dir, req.reuse, env);
    let mut rows = Vec::new();
    let mut all_finished = true;
    for plan in &all {
        if all.len() > 1 {
            eprintln!("== {}", plan.name());
        }
        runner::announce(plan);
        match runner::run_new(plan, &opts, &stop) {
            Ok(report) => {
                report_interrupted(&report);
                all_finished &= report.status == Status::Finished;
                if let Ok(m) = Manifest::load(&report.dir) {
                    rows.push(RunRow::of(&report.dir, &m));
                }
                if report.status == Status::Interrupted {
                    break;
                }
            }
            Err(e) => {
                eprintln!("error: {}: {}", plan.name(), super::describe_error(&e));
                all_finished = false;
                let index = RunIndex::scan(&req.runs_dir);
                if let Some(run) = index.of_experiment(plan.name()).next() {
                    rows.push(RunRow::of_entry(run));
                }
            }
        }
    }
    if all.len() > 1 {
        eprintln!("\n{}", ls::render(&rows, &ls::columns(&rows, &[])?));
    }
    Ok(all_finished)
}
