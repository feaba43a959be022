//! `ldm-run <EXPERIMENT.toml>...`: check every experiment first, then run them in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::bail;

use crate::config::{self, Resolved};
use crate::plan::manifest::Status;
use crate::resume::{ResumeRequest, ResumeTarget};
use crate::runner::{self, RunOptions, RunReport};

/// Expands glob patterns (`experiments/sweeps/*.toml`); a plain path is kept as it is, so a
/// missing file is reported by the loader. A pattern that matches nothing is an error.
pub fn expand(patterns: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for pattern in patterns {
        if !pattern.contains(['*', '?', '[']) {
            files.push(PathBuf::from(pattern));
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

/// Resolves every experiment; all problems of all files are reported together.
pub fn resolve_all(files: &[PathBuf], sets: &[String]) -> anyhow::Result<Vec<Resolved>> {
    let mut resolved = Vec::new();
    let mut errors = Vec::new();
    for f in files {
        match config::members(f, sets) {
            Ok(r) => resolved.extend(r),
            Err(e) => errors.push(format!("{}: {e}", f.display())),
        }
    }
    if !errors.is_empty() {
        bail!("{}\nnothing was run", errors.join("\n"));
    }
    Ok(resolved)
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

fn options(runs_dir: &Path) -> RunOptions {
    RunOptions {
        runs_dir: runs_dir.to_path_buf(),
        data_dir_env: std::env::var(crate::data::DATA_DIR_ENV).ok(),
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
    target: ResumeTarget,
    files: &[String],
    sets: &[String],
    runs_dir: &Path,
    force: bool,
) -> anyhow::Result<bool> {
    let experiment = match files {
        [] => None,
        [one] => Some(PathBuf::from(one)),
        _ => bail!("--resume continues one run: give at most one experiment file"),
    };
    let req = ResumeRequest {
        target,
        experiment,
        sets: sets.to_vec(),
        force,
    };
    let stop = stop_flag()?;
    let report = crate::resume::resume(&req, &options(runs_dir), &stop)?;
    report_interrupted(&report);
    Ok(report.status == Status::Finished)
}

/// Runs the experiments; returns whether all finished.
pub fn run(patterns: &[String], sets: &[String], runs_dir: &Path) -> anyhow::Result<bool> {
    let files = expand(patterns)?;
    let all = resolve_all(&files, sets)?;
    let stop = stop_flag()?;
    let opts = options(runs_dir);
    let mut summary = Vec::new();
    for resolved in &all {
        let name = resolved.experiment.experiment.name.clone();
        match runner::run_new(resolved, &opts, &stop) {
            Ok(report) => {
                report_interrupted(&report);
                summary.push((
                    name,
                    report.dir.display().to_string(),
                    report.status.as_str().to_string(),
                ));
                if report.status == Status::Interrupted {
                    break;
                }
            }
            Err(e) => {
                eprintln!("error: {name}: {}", super::describe_error(&e));
                summary.push((name, "-".into(), "failed".into()));
            }
        }
    }
    if all.len() > 1 {
        eprintln!("\nexperiment  run folder  status");
        for (n, d, s) in &summary {
            eprintln!("{n}  {d}  {s}");
        }
    }
    Ok(summary.iter().all(|(_, _, s)| s == "finished"))
}
