//! Running an experiment: a new run folder, then every stage in order (or a finished twin of
//! it, reused), recording each in the manifest and the run's TensorBoard events.

mod hparams;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use crate::config::Resolved;
use crate::device;
use crate::log::{EventWriter, SessionStatus, StageEvents};
use crate::plan::fingerprint;
use crate::plan::lock::RunLock;
use crate::plan::manifest::{Manifest, StageRecord, Status, now};
use crate::plan::reuse::{self, StageLock};
use crate::plan::run_dir::RunDir;
use crate::stages::{self, Outputs, StageContext};

/// Where runs go and where data is found.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub runs_dir: PathBuf,
    /// The value of `LDM_DATA_DIR`, if set.
    pub data_dir_env: Option<String>,
    /// Take finished stages with the same fingerprint from other runs instead of training.
    pub reuse: bool,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub dir: PathBuf,
    pub status: Status,
}

fn fresh_manifest(resolved: &Resolved) -> Manifest {
    let fingerprints = fingerprint::fingerprints(resolved);
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
                fingerprint: fingerprints.get(&s.name).cloned(),
                reused_from: None,
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
    let metric_tags = hparams::metrics(resolved);
    let metric_refs: Vec<&str> = metric_tags.iter().map(String::as_str).collect();
    events.hparams(&hparams::values(resolved), &metric_refs)?;
    let mut status = Status::Finished;
    let mut offset = 0;
    for stage in &resolved.stages {
        let stage_offset = offset;
        offset += stage.spec.train().map_or(0, |t| t.steps as u64);
        let record = manifest.stages.get(&stage.name);
        if record.is_some_and(|r| r.status == Status::Finished) {
            eprintln!("{}: finished earlier, skipped", stage.name);
            continue;
        }
        let fingerprint = record
            .and_then(|r| r.fingerprint.clone())
            .unwrap_or_default();
        let _hold = StageLock::acquire(&opts.runs_dir, &fingerprint, || {
            eprintln!(
                "{}: another run is producing the same stage; waiting for it",
                stage.name
            )
        })
        .with_context(|| {
            format!(
                "cannot lock stage `{}` under {}",
                stage.name,
                opts.runs_dir.display()
            )
        })?;
        let mut stage_events = StageEvents::new(&mut events, stage_offset);
        if opts.reuse
            && reuse_stage(
                run,
                manifest,
                &stage.name,
                &fingerprint,
                opts,
                &mut stage_events,
            )?
        {
            continue;
        }
        let ctx = StageContext {
            resolved,
            stage,
            run,
            device,
            seed: resolved.experiment.experiment.seed,
            data_dir_env: opts.data_dir_env.clone(),
            stop,
        };
        match run_stage(&ctx, manifest, stage_events) {
            Ok(true) => {}
            Ok(false) => {
                status = Status::Interrupted;
                break;
            }
            Err(e) => {
                manifest.status = Status::Failed;
                manifest.save(&run.root)?;
                events.session_end(SessionStatus::Failure)?;
                events.flush()?;
                return Err(e.context(format!(
                    "stage `{}` failed (run folder {})",
                    stage.name,
                    run.root.display()
                )));
            }
        }
    }
    manifest.status = status;
    if status == Status::Finished {
        manifest.finished = Some(now());
        events.session_end(SessionStatus::Success)?;
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

/// Runs one stage, recording it in the manifest; `Ok(false)` when it was interrupted.
fn run_stage(
    ctx: &StageContext,
    manifest: &mut Manifest,
    events: StageEvents,
) -> anyhow::Result<bool> {
    let name = &ctx.stage.name;
    set_stage(manifest, name, |r| {
        r.status = Status::Running;
        r.started.get_or_insert_with(now);
        r.error = None;
    });
    manifest.save(&ctx.run.root)?;
    let mut out = Outputs {
        events,
        manifest: &mut *manifest,
    };
    let result = stages::run_stage(ctx, &mut out);
    let mut events = out.events;
    let finished = match result {
        Ok(outcome) if outcome.interrupted => {
            set_stage(manifest, name, |r| r.status = Status::Interrupted);
            false
        }
        Ok(outcome) => {
            set_stage(manifest, name, |r| {
                r.status = Status::Finished;
                r.finished = Some(now());
                r.steps_done = r.steps_total;
                r.metrics.extend(outcome.metrics);
                r.notes.extend(outcome.notes);
            });
            true
        }
        Err(e) => {
            set_stage(manifest, name, |r| {
                r.status = Status::Failed;
                r.error = Some(format!("{e:#}"));
            });
            return Err(e);
        }
    };
    manifest.save(&ctx.run.root)?;
    events.flush()?;
    Ok(finished)
}

/// Takes a finished stage with the same fingerprint from another run, if there is one: links
/// its artifacts, copies its record, and logs its final metrics into this run's events.
fn reuse_stage(
    run: &RunDir,
    manifest: &mut Manifest,
    name: &str,
    fingerprint: &str,
    opts: &RunOptions,
    events: &mut StageEvents,
) -> anyhow::Result<bool> {
    let Some((source, record)) = reuse::find(&opts.runs_dir, fingerprint, &run.root) else {
        return Ok(false);
    };
    reuse::link_tree(&source, &run.stage(name)).with_context(|| {
        format!(
            "cannot link the artifacts of {} into {}",
            source.display(),
            run.root.display()
        )
    })?;
    for (metric, value) in &record.metrics {
        events.scalar(&format!("{name}/{metric}"), *value, record.steps_total)?;
    }
    eprintln!(
        "{name}: reusing the finished stage {} (same fingerprint {fingerprint}); not trained again",
        source.display()
    );
    set_stage(manifest, name, |r| {
        r.status = Status::Finished;
        r.steps_done = record.steps_done;
        r.started = record.started.clone();
        r.finished = record.finished.clone();
        r.metrics = record.metrics.clone();
        r.notes = record.notes.clone();
        r.reused_from = Some(source.display().to_string());
    });
    manifest.save(&run.root)?;
    Ok(true)
}

fn set_stage(manifest: &mut Manifest, name: &str, f: impl FnOnce(&mut StageRecord)) {
    if let Some(r) = manifest.stage_mut(name) {
        f(r);
    }
}
