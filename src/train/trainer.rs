//! The training loop every training stage shares: resume from the newest valid checkpoint, step,
//! log scalars, draw samples, checkpoint and rotate, stop cleanly on a signal or a bad loss.
//! A stage only says how to take one step, what to draw, and what its state is.
//!
//! In a job of several ranks ([`crate::dist`]) rank 0 reads the checkpoint and sends its state
//! to the others before the first step (so every rank starts from rank 0's weights, fresh or
//! resumed), the ranks agree at every step whether any of them was asked to stop, and rank 0
//! alone writes checkpoints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use candle_core::Device;

use super::checkpoint::{self, Checkpoint};
use super::lr::lr_at;
use super::settings::TrainSettings;
use crate::dist;
use crate::log::{Progress, StageEvents};

/// What a training stage provides to the shared loop.
pub trait Trainee {
    /// One optimisation step (0-based `step`) at learning rate `lr`; returns the scalars to log,
    /// the loss first.
    fn step(&mut self, step: u64, lr: f64) -> anyhow::Result<Vec<(String, f64)>>;
    /// Draws and logs samples after `step` steps.
    fn samples(&mut self, step: u64, events: &mut StageEvents) -> anyhow::Result<()>;
    /// Everything a resume needs, after `step` steps.
    fn checkpoint(&self, step: u64) -> anyhow::Result<Checkpoint>;
    /// Restores the state saved by [`Trainee::checkpoint`].
    fn restore(&mut self, ckpt: &Checkpoint) -> anyhow::Result<()>;
}

/// Where and how often the loop works.
pub struct LoopSettings<'a> {
    pub stage: &'a str,
    pub train: &'a TrainSettings,
    pub log_every: u64,
    pub sample_every: u64,
    pub checkpoint_dir: PathBuf,
    pub device: &'a Device,
    /// Set when the user asked to stop (Ctrl-C, SIGTERM): the loop checkpoints and returns.
    pub stop: &'a std::sync::atomic::AtomicBool,
}

/// How a training loop ended.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopEnd {
    /// Steps done when it ended.
    pub steps: u64,
    /// Stopped on request before the last step.
    pub interrupted: bool,
    /// The scalars of the last step this process took (empty if it took none).
    pub last: Vec<(String, f64)>,
}

impl LoopEnd {
    pub fn finished(&self) -> bool {
        !self.interrupted
    }

    /// The last value of `name`, prefixed for the manifest's metrics.
    pub fn final_metrics(&self, names: &[&str]) -> std::collections::BTreeMap<String, f64> {
        self.last
            .iter()
            .filter(|(k, _)| names.contains(&k.as_str()))
            .cloned()
            .collect()
    }
}

/// Called after every checkpoint with the steps done, to record progress.
pub type OnCheckpoint<'a> = dyn FnMut(u64) -> anyhow::Result<()> + 'a;

/// Runs `trainee` from its newest valid checkpoint (or the start) to `train.steps`.
pub fn run(
    trainee: &mut dyn Trainee,
    s: &LoopSettings,
    events: &mut StageEvents,
    on_checkpoint: &mut OnCheckpoint,
) -> anyhow::Result<LoopEnd> {
    let total = s.train.steps as u64;
    let mut step = 0;
    if dist::writes() {
        let (found, skipped) = checkpoint::latest_valid(&s.checkpoint_dir, s.device);
        for bad in skipped {
            eprintln!("warning: {bad}; using an older checkpoint");
        }
        if let Some(ckpt) = found {
            trainee.restore(&ckpt).with_context(|| {
                format!(
                    "cannot resume stage `{}` from its step-{} checkpoint",
                    s.stage, ckpt.step
                )
            })?;
            step = ckpt.step;
            // Points after the checkpoint were logged by the interrupted process and are
            // logged again from here: TensorBoard drops the old ones.
            events.resume_after(step)?;
            eprintln!("{}: resuming at step {step} of {total}", s.stage);
        }
    }
    if dist::world().size > 1 {
        step = share_state(trainee, step, s.device)?;
    }
    let mut progress = Progress::new(s.stage, total, step);
    let prefix = |k: &str| format!("{}/{k}", s.stage);
    let mut since = Instant::now();
    let mut since_step = step;
    let mut last = Vec::new();
    while step < total {
        if dist::any(s.stop.load(std::sync::atomic::Ordering::SeqCst)) {
            save(trainee, s, step, events, on_checkpoint)?;
            progress.stop("interrupted; checkpoint written");
            return Ok(LoopEnd {
                steps: step,
                interrupted: true,
                last,
            });
        }
        let lr = lr_at(
            s.train.lr,
            s.train.warmup_steps,
            s.train.lr_decay,
            step,
            total,
        );
        let scalars = trainee.step(step, lr)?;
        step += 1;
        if let Some((name, value)) = scalars.iter().find(|(_, v)| !v.is_finite()) {
            progress.stop(&format!("{name} became {value}"));
            bail!(
                "stage `{}` stopped at step {step}: {name} became {value}; the last good checkpoint is kept \
                 (try a lower stages.{}.lr or a grad_clip)",
                s.stage,
                s.stage
            );
        }
        let shown: Vec<(&str, f64)> = scalars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        progress.update(step, &shown);
        if step % s.log_every == 0 || step == total {
            let rate = (step - since_step) as f64 / since.elapsed().as_secs_f64().max(1e-9);
            for (k, v) in &scalars {
                events.scalar(&prefix(k), *v, step)?;
            }
            last.clone_from(&scalars);
            events.scalar(&prefix("lr"), lr, step)?;
            events.scalar(&prefix("steps_per_sec"), rate, step)?;
            since = Instant::now();
            since_step = step;
        }
        if step % s.sample_every == 0 || step == total {
            trainee.samples(step, events)?;
        }
        if step % s.train.checkpoint_every as u64 == 0 || step == total {
            save(trainee, s, step, events, on_checkpoint)?;
        }
    }
    progress.finish();
    Ok(LoopEnd {
        steps: step,
        interrupted: false,
        last,
    })
}

/// Rank 0's state (weights, optimizer, streams, data position) and step, on every rank.
fn share_state(trainee: &mut dyn Trainee, step: u64, device: &Device) -> anyhow::Result<u64> {
    let bytes = if dist::writes() {
        checkpoint::to_bytes(&trainee.checkpoint(step)?)?
    } else {
        Vec::new()
    };
    let bytes = dist::broadcast(bytes)?;
    if dist::writes() {
        return Ok(step);
    }
    let ckpt = checkpoint::from_bytes(&bytes, Path::new("(rank 0's state)"), device)?;
    trainee.restore(&ckpt)?;
    Ok(ckpt.step)
}

/// Writes a checkpoint (rank 0; the other ranks write nothing) and records the step.
fn save(
    trainee: &mut dyn Trainee,
    s: &LoopSettings,
    step: u64,
    events: &mut StageEvents,
    on_checkpoint: &mut OnCheckpoint,
) -> anyhow::Result<()> {
    if !dist::writes() {
        return Ok(());
    }
    let ckpt = trainee.checkpoint(step)?;
    events.flush()?;
    checkpoint::save(&s.checkpoint_dir, &ckpt)?;
    checkpoint::rotate(&s.checkpoint_dir, s.train.keep_checkpoints, s.device)?;
    on_checkpoint(step)
}
