//! Running an experiment: a new run folder, then every stage in order, recording each in the
//! manifest and the run's one TensorBoard event file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use crate::config::Resolved;
use crate::device;
use crate::log::EventWriter;
use crate::plan::lock::RunLock;
use crate::plan::manifest::{Manifest, StageRecord, Status, now};
use crate::plan::run_dir::RunDir;
use crate::stages::{self, Outputs, StageContext};

/// Where runs go and where data is found.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub runs_dir: PathBuf,
    /// The value of `LDM_DATA_DIR`, if set.
    pub data_dir_env: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub dir: PathBuf,
    pub status: Status,
}

fn fresh_manifest(resolved: &Resolved) -> Manifest {
    let stages = resolved
        .stages
        .iter()
        .map(|s| {
            let record = StageRecord {
                kind: s.spec.kind().as_str().to_string(),
                status: Status::Pending,
                steps_done: 0,
                steps_total: s.spec.train().map_or(0, |t| t.steps as u64),
                started: None,
                finished: None,
                metrics: BTreeMap::new(),
                notes: BTreeMap::new(),
                error: None,
            };
            (s.name.clone(), record)
        })
        .collect();
    Manifest {
        experiment: resolved.experiment.experiment.name.clone(),
        ldm_run_version: env!("CARGO_PKG_VERSION").to_string(),
        seed: resolved.experiment.experiment.seed,
        status: Status::Running,
        started: now(),
        finished: None,
        stages,
        order: resolved.stages.iter().map(|s| s.name.clone()).collect(),
        resumes: Vec::new(),
    }
}

/// Runs `resolved` in a new folder under `opts.runs_dir`.
pub fn run_new(
    resolved: &Resolved,
    opts: &RunOptions,
    stop: &AtomicBool,
) -> anyhow::Result<RunReport> {
    let device = device::parse(&resolved.experiment.experiment.device)
        .map_err(anyhow::Error::msg)?
        .open()?;
    crate::data::dataset::preflight(&resolved.experiment.dataset, opts.data_dir_env.as_deref())
        .context("the data set is not ready; nothing was written")?;
    let name = &resolved.experiment.experiment.name;
    let run = RunDir::create(&opts.runs_dir, name, chrono::Utc::now())?;
    let _lock = RunLock::acquire(&run.root)?;
    run.write("config.toml", &resolved.to_toml())?;
    let mut manifest = fresh_manifest(resolved);
    manifest.save(&run.root)?;
    eprintln!("run folder: {}", run.root.display());
    execute(resolved, &run, &mut manifest, opts, &device, stop)
}

/// Runs every stage of `manifest` that has not finished.
pub fn execute(
    resolved: &Resolved,
    run: &RunDir,
    manifest: &mut Manifest,
    opts: &RunOptions,
    device: &candle_core::Device,
    stop: &AtomicBool,
) -> anyhow::Result<RunReport> {
    let mut events = EventWriter::create(&run.root)?;
    events.text("config", &format!("```toml\n{}```", resolved.to_toml()), 0)?;
    let mut status = Status::Finished;
    for stage in &resolved.stages {
        if manifest
            .stages
            .get(&stage.name)
            .is_some_and(|r| r.status == Status::Finished)
        {
            eprintln!("{}: finished earlier, skipped", stage.name);
            continue;
        }
        set_stage(manifest, &stage.name, |r| {
            r.status = Status::Running;
            r.started.get_or_insert_with(now);
            r.error = None;
        });
        manifest.save(&run.root)?;
        let ctx = StageContext {
            resolved,
            stage,
            run,
            device,
            seed: resolved.experiment.experiment.seed,
            data_dir_env: opts.data_dir_env.clone(),
            stop,
        };
        let mut out = Outputs {
            events: &mut events,
            manifest,
        };
        let result = stages::run_stage(&ctx, &mut out);
        match result {
            Ok(outcome) if outcome.interrupted => {
                set_stage(manifest, &stage.name, |r| r.status = Status::Interrupted);
                status = Status::Interrupted;
            }
            Ok(outcome) => set_stage(manifest, &stage.name, |r| {
                r.status = Status::Finished;
                r.finished = Some(now());
                r.steps_done = r.steps_total;
                r.metrics.extend(outcome.metrics);
                r.notes.extend(outcome.notes);
            }),
            Err(e) => {
                set_stage(manifest, &stage.name, |r| {
                    r.status = Status::Failed;
                    r.error = Some(format!("{e:#}"));
                });
                manifest.status = Status::Failed;
                manifest.save(&run.root)?;
                events.flush()?;
                return Err(e.context(format!(
                    "stage `{}` failed (run folder {})",
                    stage.name,
                    run.root.display()
                )));
            }
        }
        manifest.save(&run.root)?;
        events.flush()?;
        if status == Status::Interrupted {
            break;
        }
    }
    manifest.status = status;
    if status == Status::Finished {
        manifest.finished = Some(now());
    }
    manifest
        .save(&run.root)
        .context("cannot record the end of the run")?;
    events.flush()?;
    Ok(RunReport {
        dir: run.root.clone(),
        status,
    })
}

fn set_stage(manifest: &mut Manifest, name: &str, f: impl FnOnce(&mut StageRecord)) {
    if let Some(r) = manifest.stage_mut(name) {
        f(r);
    }
}
