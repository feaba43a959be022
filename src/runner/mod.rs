//! Carrying out a plan: a new run folder (or the one being continued), then every stage in
//! order as the plan says (train, resume, reuse a finished twin, or skip a finished one),
//! recording each in the manifest and the run's TensorBoard events.
//!
//! In a job of several ranks ([`crate::dist`]) every rank carries out the same plan, and rank 0
//! alone creates the folder (its path is broadcast), takes the locks, decides reuse (and says
//! so) and writes the manifest and events.

mod hparams;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use crate::device::DeviceSpec;
use crate::dist;
use crate::log::{EventWriter, SessionStatus, StageEvents};
use crate::plan::action::{self, Action, Shown};
use crate::plan::lock::RunLock;
use crate::plan::manifest::{Manifest, StageRecord, Status, now};
use crate::plan::reuse::{self, StageLock};
use crate::plan::run_dir::RunDir;
use crate::plan::{Plan, PlannedStage, RunAction, RunIndex, Task};
use crate::stages::{self, Outputs, StageContext};

/// Where runs go and where data is found.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub runs_dir: PathBuf,
    /// The value of `LDM_DATA_DIR`, if set.
    pub data_dir: Option<String>,
    /// Take finished stages with the same fingerprint from other runs instead of training.
    pub reuse: bool,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub dir: PathBuf,
    pub status: Status,
}

/// A manifest for a new run of `plan` on `device`: every stage pending, with its fingerprint.
fn fresh_manifest(plan: &Plan, device: &candle_core::Device) -> Manifest {
    let stages = plan
        .stages
        .iter()
        .map(|s| {
            let record = StageRecord {
                kind: s.task.kind().as_str().to_string(),
                status: Status::Pending,
                steps_done: 0,
                steps_total: s.steps(),
                started: None,
                finished: None,
                metrics: BTreeMap::new(),
                notes: BTreeMap::new(),
                error: None,
                fingerprint: Some(s.fingerprint.clone()),
                reused_from: None,
            };
            (s.name.clone(), record)
        })
        .collect();
    Manifest {
        experiment: plan.name().to_string(),
        ldm_run_version: env!("CARGO_PKG_VERSION").to_string(),
        seed: plan.resolved.experiment.experiment.seed,
        status: Status::Running,
        started: now(),
        finished: None,
        stages,
        order: plan.stages.iter().map(|s| s.name.clone()).collect(),
        resumes: Vec::new(),
        config: Some(plan.resolved.experiment_json()),
        layout: Some(crate::parallel::layout(device)),
    }
}

/// Refuses, before anything is written, a stage that cannot be split over the ranks of a job:
/// an autoencoder with a patch discriminator, whose adaptive weight needs the whole batch's
/// gradients of both losses in one process.
pub fn check_splittable(plan: &Plan) -> anyhow::Result<()> {
    let ranks = dist::world().size;
    if ranks == 1 {
        return Ok(());
    }
    for stage in plan.stages.iter().filter(|s| s.action.works()) {
        if let Task::Autoencoder(spec) = &stage.task
            && spec.loss.disc_weight > 0.0
        {
            anyhow::bail!(
                "stage `{}` trains a patch discriminator (stages.{}.disc_weight = {}), whose \
                 adaptive weight needs the whole batch in one process; it cannot be split over \
                 {ranks} processes: train it with one process (ldm-run without mpirun), then \
                 resume the run (or let a new one reuse the stage) with several; nothing was run",
                stage.name,
                stage.name,
                spec.loss.disc_weight
            );
        }
    }
    Ok(())
}

/// Saves the manifest of `run` (on rank 0; the other ranks write nothing).
pub fn record(manifest: &Manifest, run: &RunDir) -> anyhow::Result<()> {
    if dist::writes() {
        manifest.save(&run.root)?;
    }
    Ok(())
}

/// Rank 0's `path` on every rank.
pub fn same_path(path: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let bytes = dist::broadcast(path.as_os_str().as_bytes().to_vec())?;
    Ok(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

/// The device of the plan's experiment for this rank ([`dist::rank_device`]), opened.
pub fn open_device(plan: &Plan) -> anyhow::Result<candle_core::Device> {
    let spec: DeviceSpec = plan.resolved.experiment.experiment.device;
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let w = dist::world();
    let device = dist::rank_device(spec, w, visible.as_deref());
    let opened = device.open();
    match device {
        // A build with CUDA that cannot open this rank's GPU: say which rank takes which GPU.
        DeviceSpec::Cuda(i) if w.local_size > 1 && candle_core::utils::cuda_is_available() => {
            opened.with_context(|| {
                format!(
                    "rank {} is process {} of {} on this machine and takes GPU {i} (one GPU per \
                     process: start as many processes per machine as it has GPUs, or bind one \
                     to each with CUDA_VISIBLE_DEVICES)",
                    w.rank,
                    w.local_rank + 1,
                    w.local_size
                )
            })
        }
        _ => opened,
    }
}

/// Carries out a plan for a new run (or, when an identical run finished, reports it).
pub fn run_new(plan: &Plan, opts: &RunOptions, stop: &AtomicBool) -> anyhow::Result<RunReport> {
    if let RunAction::Finished { dir } = &plan.run {
        eprintln!(
            "{}: finished earlier in {} with these stages; nothing to train",
            plan.name(),
            dir.display()
        );
        return Ok(RunReport {
            dir: dir.clone(),
            status: Status::Finished,
        });
    }
    check_splittable(plan)?;
    let device = open_device(plan)?;
    let mut manifest = fresh_manifest(plan, &device);
    let (run, _lock) = if dist::writes() {
        crate::data::dataset::preflight(
            &plan.resolved.experiment.dataset,
            opts.data_dir.as_deref(),
        )
        .context("the data set is not ready; nothing was written")?;
        let run = RunDir::create(&opts.runs_dir, plan.name(), chrono::Utc::now())?;
        let mut lock = RunLock::acquire(&run.root)?;
        lock.claim()?;
        run.write("config.toml", &plan.resolved.to_toml())?;
        manifest.save(&run.root)?;
        eprintln!("run folder: {}", run.root.display());
        (run, Some(lock))
    } else {
        (RunDir::open(Path::new("")), None)
    };
    let run = RunDir::open(&same_path(&run.root)?);
    execute(plan, &run, &mut manifest, opts, &device, stop)
}

/// Prints what the plan does with each stage, as `ldm-run plan` shows it.
pub fn announce(plan: &Plan) {
    for s in &plan.stages {
        eprintln!(
            "{}: {}",
            s.name,
            Shown {
                action: &s.action,
                steps: s.steps()
            }
        );
    }
}

/// Runs every stage of `plan` in `run` whose action is not done.
pub fn execute(
    plan: &Plan,
    run: &RunDir,
    manifest: &mut Manifest,
    opts: &RunOptions,
    device: &candle_core::Device,
    stop: &AtomicBool,
) -> anyhow::Result<RunReport> {
    let resolved = &plan.resolved;
    if dist::world().size > 1 && dist::writes() {
        eprintln!(
            "job: {}; gradients summed {}",
            crate::parallel::layout(device),
            dist::gradient_transport(device)
        );
    }
    let mut events = if dist::writes() {
        let mut events = EventWriter::create(&run.root)?;
        events.text("config", &format!("```toml\n{}```", resolved.to_toml()), 0)?;
        let metric_tags = hparams::metrics(plan);
        let metric_refs: Vec<&str> = metric_tags.iter().map(String::as_str).collect();
        events.hparams(&hparams::values(resolved), &metric_refs)?;
        Some(events)
    } else {
        None
    };
    let mut status = Status::Finished;
    let mut offset = 0;
    for stage in &plan.stages {
        let stage_offset = offset;
        offset += stage.steps();
        if stage.action == Action::Done {
            eprintln!("{}: done (finished in this run), skipped", stage.name);
            continue;
        }
        let (_hold, action) = if dist::writes() {
            let hold = StageLock::acquire(&opts.runs_dir, &stage.fingerprint, || {
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
            (Some(hold), decide_now(stage, run, manifest, opts))
        } else {
            (None, Action::Train)
        };
        // Rank 0's decision, on every rank (the others say no); also the point where every
        // rank has finished the stages before, and rank 0 has written them.
        let reuse = dist::any(matches!(action, Action::Reuse { .. }));
        let mut stage_events = StageEvents::new(events.as_mut(), stage_offset);
        if reuse {
            if let Action::Reuse { from } = &action {
                reuse_stage(run, manifest, &stage.name, from, &mut stage_events)?;
            }
            continue;
        }
        eprintln!(
            "{}: {}",
            stage.name,
            Shown {
                action: &action,
                steps: stage.steps()
            }
        );
        let ctx = StageContext {
            resolved,
            stage,
            run,
            device,
            seed: resolved.experiment.experiment.seed,
            data_dir: opts.data_dir.clone(),
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
                record(manifest, run)?;
                if let Some(events) = events.as_mut() {
                    events.session_end(SessionStatus::Failure)?;
                    events.flush()?;
                }
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
    }
    record(manifest, run).context("cannot record the end of the run")?;
    if let Some(events) = events.as_mut() {
        if status == Status::Finished {
            events.session_end(SessionStatus::Success)?;
        }
        events.flush()?;
    }
    Ok(RunReport {
        dir: run.root.clone(),
        status,
    })
}

/// The stage's action decided again now that its fingerprint is held: runs before it (an
/// earlier experiment of this command, another process) may have finished a twin since the
/// plan was made.
fn decide_now(
    stage: &PlannedStage,
    run: &RunDir,
    manifest: &Manifest,
    opts: &RunOptions,
) -> Action {
    let index = RunIndex::scan(&opts.runs_dir);
    let sources = action::Sources {
        index: &index,
        reuse: opts.reuse,
        earlier: &[],
        this_run: Some((&run.root, manifest)),
    };
    action::decide(
        &stage.name,
        &stage.fingerprint,
        Some(&run.checkpoints(&stage.name)),
        &sources,
    )
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
    record(manifest, ctx.run)?;
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
    record(manifest, ctx.run)?;
    events.flush()?;
    Ok(finished)
}

/// Takes the finished stage folder `source` for stage `name`: links its artifacts, copies its
/// record, and logs its final metrics into this run's events.
fn reuse_stage(
    run: &RunDir,
    manifest: &mut Manifest,
    name: &str,
    source: &std::path::Path,
    events: &mut StageEvents,
) -> anyhow::Result<()> {
    let record = Manifest::load(source.parent().unwrap_or(source))
        .ok()
        .and_then(|m| m.stages.get(&file_name(source)).cloned())
        .with_context(|| format!("cannot read the record of {}", source.display()))?;
    reuse::link_tree(source, &run.stage(name)).with_context(|| {
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
        "{name}: reusing the finished stage {} (same fingerprint); not trained again",
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
    Ok(())
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

fn set_stage(manifest: &mut Manifest, name: &str, f: impl FnOnce(&mut StageRecord)) {
    if let Some(r) = manifest.stage_mut(name) {
        f(r);
    }
}
