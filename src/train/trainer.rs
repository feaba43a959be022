//! The training loop every training stage shares: resume from the newest valid checkpoint, step,
//! log scalars, measure the held-out set, draw samples, checkpoint and rotate (keeping the best
//! checkpoint apart), stop cleanly on a signal or a bad loss. A stage only says how to take one
//! step, what to measure and draw, and what its state is.
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
use super::held_out::{Best, HeldOutSettings};
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
    /// The held-out metrics of the current weights (names without the `held_out/` prefix):
    /// the same images, timesteps and noise every time. Stages without a held-out set have
    /// none.
    fn held_out(&mut self) -> anyhow::Result<Vec<(String, f64)>> {
        Ok(Vec::new())
    }
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
    /// The held-out measurement (`None`: the stage has none).
    pub held_out: Option<&'a HeldOutSettings>,
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
    /// The last held-out metrics measured, with their `held_out/` prefix.
    pub held_out: Vec<(String, f64)>,
    /// The best value of `keep_best` and its step.
    pub best: Option<Best>,
}

impl LoopEnd {
    pub fn finished(&self) -> bool {
        !self.interrupted
    }

    /// The last values of `names` and the held-out metrics, and the best step when a
    /// checkpoint is kept for it: the stage's final metrics for the manifest.
    pub fn final_metrics(&self, names: &[&str]) -> std::collections::BTreeMap<String, f64> {
        let mut out: std::collections::BTreeMap<String, f64> = self
            .last
            .iter()
            .filter(|(k, _)| names.contains(&k.as_str()))
            .chain(&self.held_out)
            .cloned()
            .collect();
        if let Some(b) = self.best {
            out.insert("best_step".into(), b.step as f64);
        }
        out
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
    let mut best = None;
    if dist::writes() {
        let (found, skipped) = checkpoint::latest_valid(&s.checkpoint_dir, s.device);
        for bad in skipped {
            eprintln!("warning: {bad}; using an older checkpoint");
        }
        if let Some(ckpt) = found {
            best = best_of(&ckpt)?;
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
        (step, best) = share_state(trainee, step, best, s.device)?;
    }
    let mut progress = Progress::new(s.stage, total, step);
    let prefix = |k: &str| format!("{}/{k}", s.stage);
    let mut since = Instant::now();
    let mut since_step = step;
    let mut last = Vec::new();
    let mut held_out = Vec::new();
    while step < total {
        if dist::any(s.stop.load(std::sync::atomic::Ordering::SeqCst)) {
            save(trainee, s, step, best, events, on_checkpoint)?;
            progress.stop("interrupted; checkpoint written");
            return Ok(LoopEnd {
                steps: step,
                interrupted: true,
                last,
                held_out,
                best,
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
        if let Some(h) = s.held_out.filter(|h| h.due(step, total)) {
            let started = Instant::now();
            held_out = trainee
                .held_out()?
                .into_iter()
                .map(|(k, v)| (format!("held_out/{k}"), v))
                .collect();
            let seconds = started.elapsed().as_secs_f64();
            for (k, v) in &held_out {
                events.scalar(&prefix(k), *v, step)?;
            }
            events.scalar(&prefix("held_out/seconds"), seconds, step)?;
            let shown: Vec<String> = held_out
                .iter()
                .map(|(k, v)| format!("{k} {}", crate::log::format_value(*v)))
                .collect();
            progress.message(&format!(
                "{}: step {step}: {} ({seconds:.1} s)",
                s.stage,
                shown.join(", ")
            ));
            if let Some(name) = &h.keep_best
                && let Some(&(_, value)) = held_out.iter().find(|(k, _)| k == name)
                && Best::improves(best, name, value)
            {
                best = Some(Best { step, value });
                save_best(trainee, s, step, best)?;
            }
        }
        if step % s.sample_every == 0 || step == total {
            trainee.samples(step, events)?;
        }
        if step % s.train.checkpoint_every as u64 == 0 || step == total {
            save(trainee, s, step, best, events, on_checkpoint)?;
        }
    }
    progress.finish();
    Ok(LoopEnd {
        steps: step,
        interrupted: false,
        last,
        held_out,
        best,
    })
}

/// The best value so far that a checkpoint saved (none in a checkpoint from before
/// `keep_best`); a value that does not read as one is an error, not a silent restart of the
/// best.
fn best_of(ckpt: &Checkpoint) -> anyhow::Result<Option<Best>> {
    serde_json::from_value(ckpt.state["best"].clone()).with_context(|| {
        format!(
            "the step-{} checkpoint's best value {} is not a step and a value",
            ckpt.step, ckpt.state["best"]
        )
    })
}

/// The stage's checkpoint at `step` with the loop's own state (the best so far) beside it.
fn checkpoint_at(
    trainee: &mut dyn Trainee,
    step: u64,
    best: Option<Best>,
) -> anyhow::Result<Checkpoint> {
    let mut ckpt = trainee.checkpoint(step)?;
    ckpt.state["best"] = serde_json::to_value(best)?;
    Ok(ckpt)
}

/// Writes the checkpoint of a new best into `best/` beside the rotated ones, then deletes the
/// one it replaces (rank 0; the other ranks write nothing).
fn save_best(
    trainee: &mut dyn Trainee,
    s: &LoopSettings,
    step: u64,
    best: Option<Best>,
) -> anyhow::Result<()> {
    if !dist::writes() {
        return Ok(());
    }
    let dir = checkpoint::best_dir(&s.checkpoint_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    checkpoint::save(&dir, &checkpoint_at(trainee, step, best)?)?;
    checkpoint::rotate(&dir, 1, s.device)?;
    Ok(())
}

/// Rank 0's state (weights, optimizer, streams, data position, best so far) and step, on
/// every rank.
fn share_state(
    trainee: &mut dyn Trainee,
    step: u64,
    best: Option<Best>,
    device: &Device,
) -> anyhow::Result<(u64, Option<Best>)> {
    let bytes = if dist::writes() {
        checkpoint::to_bytes(&checkpoint_at(trainee, step, best)?)?
    } else {
        Vec::new()
    };
    let bytes = dist::broadcast(bytes)?;
    if dist::writes() {
        return Ok((step, best));
    }
    let ckpt = checkpoint::from_bytes(&bytes, Path::new("(rank 0's state)"), device)?;
    trainee.restore(&ckpt)?;
    Ok((ckpt.step, best_of(&ckpt)?))
}

/// Writes a checkpoint (rank 0; the other ranks write nothing) and records the step.
fn save(
    trainee: &mut dyn Trainee,
    s: &LoopSettings,
    step: u64,
    best: Option<Best>,
    events: &mut StageEvents,
    on_checkpoint: &mut OnCheckpoint,
) -> anyhow::Result<()> {
    if !dist::writes() {
        return Ok(());
    }
    let ckpt = checkpoint_at(trainee, step, best)?;
    events.flush()?;
    checkpoint::save(&s.checkpoint_dir, &ckpt)?;
    checkpoint::rotate(&s.checkpoint_dir, s.train.keep_checkpoints, s.device)?;
    on_checkpoint(step)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::EventWriter;
    use candle_core::Tensor;
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicBool;

    /// A trainee whose held-out loss after step k is `curve[k / 2 - 1]` (measured every 2).
    struct Scripted {
        curve: Vec<f64>,
        step: u64,
    }

    impl Trainee for Scripted {
        fn step(&mut self, step: u64, _lr: f64) -> anyhow::Result<Vec<(String, f64)>> {
            self.step = step + 1;
            Ok(vec![("loss".into(), 1.0)])
        }
        fn samples(&mut self, _: u64, _: &mut StageEvents) -> anyhow::Result<()> {
            Ok(())
        }
        fn held_out(&mut self) -> anyhow::Result<Vec<(String, f64)>> {
            Ok(vec![(
                "loss".into(),
                self.curve[(self.step / 2 - 1) as usize],
            )])
        }
        fn checkpoint(&self, step: u64) -> anyhow::Result<Checkpoint> {
            let mut ckpt = Checkpoint::new(step, self.step);
            ckpt.tensors = BTreeMap::from([(
                "model/w".to_string(),
                Tensor::new(&[step as f32], &Device::Cpu)?,
            )]);
            Ok(ckpt)
        }
        fn restore(&mut self, ckpt: &Checkpoint) -> anyhow::Result<()> {
            self.step = ckpt.stage_state()?;
            Ok(())
        }
    }

    #[test]
    fn the_best_checkpoint_survives_rotation_and_a_resume() {
        let tmp = tempfile::tempdir().unwrap();
        let train: TrainSettings = serde_json::from_value(serde_json::json!({
            "steps": 10, "batch_size": 1, "lr": 1e-3,
            "checkpoint_every": 2, "keep_checkpoints": 1
        }))
        .unwrap();
        let held_out = HeldOutSettings {
            eval_every: 2,
            keep_best: Some("held_out/loss".into()),
            ..HeldOutSettings::default()
        };
        let stop = AtomicBool::new(false);
        let dir = tmp.path().join("checkpoints");
        std::fs::create_dir_all(&dir).unwrap();
        let settings = LoopSettings {
            stage: "s",
            train: &train,
            log_every: 100,
            sample_every: 100,
            held_out: Some(&held_out),
            checkpoint_dir: dir.clone(),
            device: &Device::Cpu,
            stop: &stop,
        };
        let curve = vec![5.0, 1.0, 3.0, 4.0, 6.0];
        let run = |steps: usize| {
            let train = TrainSettings {
                steps,
                ..train.clone()
            };
            let s = LoopSettings {
                train: &train,
                checkpoint_dir: dir.clone(),
                ..settings
            };
            let mut writer = EventWriter::create(&tmp.path().join("events")).unwrap();
            let mut events = StageEvents::new(Some(&mut writer), 0);
            let mut trainee = Scripted {
                curve: curve.clone(),
                step: 0,
            };
            run(&mut trainee, &s, &mut events, &mut |_| Ok(())).unwrap()
        };
        // Stop after 6 steps (as if interrupted), then resume to 10.
        let first = run(6);
        assert_eq!(
            first.best,
            Some(Best {
                step: 4,
                value: 1.0
            })
        );
        let end = run(10);
        assert_eq!(
            end.best,
            Some(Best {
                step: 4,
                value: 1.0
            }),
            "kept across the resume"
        );
        assert_eq!(end.final_metrics(&[])["best_step"], 4.0);
        assert_eq!(end.final_metrics(&[])["held_out/loss"], 6.0);
        let rotated: Vec<u64> = checkpoint::list(&dir).iter().map(|(s, _)| *s).collect();
        assert_eq!(rotated, [10], "the rotation kept only the newest");
        let best = checkpoint::list(&checkpoint::best_dir(&dir));
        assert_eq!(best.len(), 1);
        let ckpt = checkpoint::load(&best[0].1, &Device::Cpu).unwrap();
        assert_eq!(ckpt.step, 4);
        assert_eq!(
            ckpt.tensors["model/w"].to_vec1::<f32>().unwrap(),
            [4.0],
            "the weights of step 4"
        );
    }

    #[test]
    fn a_checkpoint_best_value_is_read_or_refused() {
        let mut ckpt = Checkpoint::new(7, 0u64);
        assert_eq!(best_of(&ckpt).unwrap(), None, "older checkpoints have none");
        ckpt.state["best"] = serde_json::json!({"step": 4, "value": 0.5});
        assert_eq!(
            best_of(&ckpt).unwrap(),
            Some(Best {
                step: 4,
                value: 0.5
            })
        );
        ckpt.state["best"] = serde_json::json!("four");
        let e = best_of(&ckpt).unwrap_err().to_string();
        assert!(e.contains("step-7 checkpoint's best value \"four\""), "{e}");
    }
}
