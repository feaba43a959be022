//! Continuing an interrupted run: finished stages are skipped, the running one continues from
//! its newest valid checkpoint. A resume with training settings other than the run's is refused
//! with the differing keys unless forced (and then recorded in the manifest).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::{Context, bail};

use crate::config::diff::{KeyDiff, diff, is_training_relevant};
use crate::config::{self, Resolved};
use crate::plan::lock::RunLock;
use crate::plan::manifest::{Manifest, ResumeRecord, Status, now};
use crate::plan::run_dir::RunDir;
use crate::runner::{self, RunOptions, RunReport};
use crate::runs;

/// Which run to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum ResumeTarget {
    Dir(PathBuf),
    /// The newest unfinished run of the experiment given on the command line.
    Latest,
}

impl ResumeTarget {
    pub fn parse(text: &str) -> Self {
        if text == "latest" {
            Self::Latest
        } else {
            Self::Dir(PathBuf::from(text))
        }
    }
}

/// What the user asked for.
pub struct ResumeRequest {
    pub target: ResumeTarget,
    /// The experiment file given with the resume, if any.
    pub experiment: Option<PathBuf>,
    pub sets: Vec<String>,
    pub force: bool,
}

/// The newest run of `name` under `runs_dir` that has not finished.
pub fn latest_unfinished(runs_dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    runs::of_experiment(runs_dir, name)
        .into_iter()
        .find(|(_, m)| m.status != Status::Finished)
        .map(|(dir, _)| dir)
        .with_context(|| {
            format!(
                "no unfinished run of experiment `{name}` under {}",
                runs_dir.display()
            )
        })
}

/// The configuration to resume with, refused when training-relevant keys changed (unless
/// `force`). Returns it with every changed key.
pub fn checked_config(
    saved: &Resolved,
    wanted: Resolved,
    force: bool,
    run_dir: &Path,
) -> anyhow::Result<(Resolved, Vec<KeyDiff>)> {
    let changes = diff(&saved.experiment, &wanted.experiment);
    let relevant: Vec<&KeyDiff> = changes
        .iter()
        .filter(|d| is_training_relevant(&d.key))
        .collect();
    if !relevant.is_empty() && !force {
        let list: Vec<String> = relevant.iter().map(|d| format!("  {d}")).collect();
        bail!(
            "refusing to resume {}: these training settings differ from the run's config.toml:\n{}\n\
             resume without them, start a new run, or pass --force to continue anyway (recorded in the manifest)",
            run_dir.display(),
            list.join("\n")
        );
    }
    Ok((wanted, changes))
}

/// Continues the run the request names.
pub fn resume(
    req: &ResumeRequest,
    opts: &RunOptions,
    stop: &AtomicBool,
) -> anyhow::Result<RunReport> {
    let dir = match (&req.target, &req.experiment) {
        (ResumeTarget::Dir(d), _) => d.clone(),
        (ResumeTarget::Latest, Some(file)) => {
            let resolved = config::resolve(file, &req.sets)?;
            latest_unfinished(&opts.runs_dir, &resolved.experiment.experiment.name)?
        }
        (ResumeTarget::Latest, None) => bail!(
            "--resume latest needs the experiment file: ldm-run EXPERIMENT.toml --resume latest"
        ),
    };
    let run = RunDir::open(&dir);
    let mut manifest = Manifest::load(&run.root)
        .with_context(|| format!("{} is not an ldm-run run folder", run.root.display()))?;
    let _lock = RunLock::acquire(&run.root)?;
    if manifest.status == Status::Finished {
        eprintln!(
            "{} has finished already; nothing to resume",
            run.root.display()
        );
        return Ok(RunReport {
            dir: run.root.clone(),
            status: Status::Finished,
        });
    }
    let saved =
        config::resolve_with_env(&run.config(), std::iter::empty(), &[]).with_context(|| {
            format!(
                "cannot read the run's configuration {}",
                run.config().display()
            )
        })?;
    let wanted = config::resolve(
        req.experiment.as_deref().unwrap_or(&run.config()),
        &req.sets,
    )?;
    let (resolved, changes) = checked_config(&saved, wanted, req.force, &run.root)?;
    if !changes.is_empty() {
        run.write("config.toml", &resolved.to_toml())?;
    }
    manifest.resumes.push(ResumeRecord {
        at: now(),
        from_status: manifest.status,
        forced: req.force && changes.iter().any(|d| is_training_relevant(&d.key)),
        changed: changes.iter().map(ToString::to_string).collect(),
    });
    manifest.status = Status::Running;
    manifest.finished = None;
    manifest.save(&run.root)?;
    eprintln!("resuming {}", run.root.display());
    let device = crate::device::parse(&resolved.experiment.experiment.device)
        .map_err(anyhow::Error::msg)?
        .open()?;
    runner::execute(&resolved, &run, &mut manifest, opts, &device, stop)
}
