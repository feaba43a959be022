//! `ldm-run <EXPERIMENT.toml>...`: check every experiment first, then run them in order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::bail;

use super::ls::{self, RunRow};
use crate::config::{self, Resolved};
use crate::plan::manifest::Manifest;
use crate::plan::manifest::Status;
use crate::resume::{ResumeRequest, ResumeTarget};
use crate::runner::{self, RunOptions, RunReport};
use crate::runs;

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

/// Keeps only the experiment (or sweep member) named `name`; an unknown name is an error that
/// lists the names the files give.
pub fn select_member(all: Vec<Resolved>, name: &str) -> anyhow::Result<Vec<Resolved>> {
    let names: Vec<String> = all
        .iter()
        .map(|r| r.experiment.experiment.name.clone())
        .collect();
    let kept: Vec<Resolved> = all
        .into_iter()
        .filter(|r| r.experiment.experiment.name == name)
        .collect();
    if kept.is_empty() {
        bail!(
            "--member {name}: no experiment or sweep member has this name; the files give: {}\nnothing was run",
            names.join(", ")
        );
    }
    Ok(kept)
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

fn options(runs_dir: &Path, reuse: bool) -> RunOptions {
    RunOptions {
        runs_dir: runs_dir.to_path_buf(),
        data_dir_env: std::env::var(crate::data::DATA_DIR_ENV).ok(),
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
    target: ResumeTarget,
    files: &[String],
    sets: &[String],
    runs_dir: &Path,
    force: bool,
    reuse: bool,
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
    let report = crate::resume::resume(&req, &options(runs_dir, reuse), &stop)?;
    report_interrupted(&report);
    Ok(report.status == Status::Finished)
}

/// Runs the experiments; returns whether all finished. An experiment whose latest run with the
/// same configuration finished is not run again (unless `reuse` is off). With `member`, only
/// the experiment or sweep member of that name runs.
pub fn run(
    patterns: &[String],
    sets: &[String],
    runs_dir: &Path,
    reuse: bool,
    member: Option<&str>,
) -> anyhow::Result<bool> {
    let files = expand(patterns)?;
    let mut all = resolve_all(&files, sets)?;
    if let Some(name) = member {
        all = select_member(all, name)?;
    }
    let stop = stop_flag()?;
    let opts = options(runs_dir, reuse);
    let mut rows = Vec::new();
    let mut all_finished = true;
    for resolved in &all {
        let name = &resolved.experiment.experiment.name;
        if let Some((dir, m)) = runs::latest_matching(runs_dir, resolved)
            .filter(|(_, m)| reuse && m.status == Status::Finished)
        {
            eprintln!(
                "{name}: finished earlier in {} with this configuration; nothing to train",
                dir.display()
            );
            rows.push(RunRow::of(&dir, &m));
            continue;
        }
        match runner::run_new(resolved, &opts, &stop) {
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
                eprintln!("error: {name}: {}", super::describe_error(&e));
                all_finished = false;
                if let Some((dir, m)) = runs::of_experiment(runs_dir, name).into_iter().next() {
                    rows.push(RunRow::of(&dir, &m));
                }
            }
        }
    }
    if all.len() > 1 {
        eprintln!("\n{}", ls::render(&rows));
    }
    Ok(all_finished)
}
