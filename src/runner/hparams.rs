//! What a run shows in TensorBoard's HParams table: its main settings (and every swept key) as
//! hyperparameters, and the final metrics of its stages as the metric columns.

use crate::config::stage::{DIFFUSION_HELD_OUT, DIFFUSION_JUDGED};
use crate::config::{Resolved, StageKind};
use crate::log::HParamValue;
use crate::plan::{Plan, Task};

/// The stage settings shown as hyperparameters (where the stage's kind has them).
const STAGE_KEYS: &[&str] = &[
    "steps",
    "batch_size",
    "lr",
    "ema_decay",
    "kl_weight",
    "guidance",
    "sampler_steps",
    "sampler",
];

/// Scalar hyperparameters of a run; lists become strings.
pub fn values(resolved: &Resolved) -> Vec<(String, HParamValue)> {
    let e = &resolved.experiment;
    let list = |v: &[usize]| format!("{v:?}");
    let mut out: Vec<(String, HParamValue)> = vec![
        ("experiment".into(), e.experiment.name.clone().into()),
        ("experiment.seed".into(), e.experiment.seed.into()),
        ("dataset.name".into(), e.dataset.name.as_str().into()),
        ("dataset.train_limit".into(), e.dataset.train_limit.into()),
        ("autoencoder.ch".into(), e.autoencoder.ch.into()),
        (
            "autoencoder.ch_mult".into(),
            list(&e.autoencoder.ch_mult).into(),
        ),
        ("unet.model_channels".into(), e.unet.model_channels.into()),
        (
            "unet.channel_mult".into(),
            list(&e.unet.channel_mult).into(),
        ),
        (
            "unet.attention_resolutions".into(),
            list(&e.unet.attention_resolutions).into(),
        ),
        ("schedule.kind".into(), text(&e.schedule.kind).into()),
        (
            "schedule.prediction".into(),
            text(&e.schedule.prediction).into(),
        ),
        (
            "conditioning.kind".into(),
            e.conditioning.kind.as_str().into(),
        ),
    ];
    for (name, stage) in &e.stages {
        let key = |k: &str| format!("stages.{name}.{k}");
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&stage.spec) else {
            continue;
        };
        for k in STAGE_KEYS {
            let value: Option<HParamValue> = match fields.get(*k) {
                Some(serde_json::Value::Number(n)) => n.as_f64().map(Into::into),
                Some(serde_json::Value::String(s)) => Some(s.clone().into()),
                _ => None,
            };
            if let Some(v) = value {
                out.push((key(k), v));
            }
        }
    }
    out
}

/// A setting's name as the file writes it (`scaled_linear`).
fn text(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// The scalar tags whose final values are the run's metrics.
pub fn metrics(plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for stage in &plan.stages {
        let tags: &[&str] = match stage.task.kind() {
            StageKind::Autoencoder => &["test/psnr", "loss/rec"],
            StageKind::Diffusion => &["loss/mse"],
            StageKind::Classifier => &["test/accuracy"],
            StageKind::Eval => &["accuracy", "frechet", "kid", "psnr", "ssim"],
            StageKind::Sample => &[],
        };
        out.extend(tags.iter().map(|t| format!("{}/{t}", stage.name)));
        let held_out: Vec<&str> = match &stage.task {
            Task::Autoencoder(s) if s.held_out.enabled() => vec!["held_out/loss"],
            Task::Diffusion { spec, judge, .. } if spec.held_out.enabled() => {
                let judged = if judge.is_some() {
                    DIFFUSION_JUDGED
                } else {
                    &[]
                };
                DIFFUSION_HELD_OUT.iter().chain(judged).copied().collect()
            }
            _ => Vec::new(),
        };
        for metric in held_out {
            out.push(format!("{}/{metric}", stage.name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::checks::MemoryCheck;
    use crate::plan::{Planning, RunIndex};

    /// The metric tags of the smoke experiment's plan with `sets`.
    fn tags(sets: &[&str]) -> Vec<String> {
        let resolved = crate::config::smoke(sets);
        let index = RunIndex::default();
        let planning = Planning {
            index: &index,
            reuse: true,
            memory: MemoryCheck::Skip,
        };
        metrics(&Plan::new_run(resolved, &planning, &[]).unwrap())
    }

    #[test]
    fn held_out_and_judged_metrics_are_hparams_metrics() {
        let judged = [
            "ldm/held_out/accuracy",
            "ldm/held_out/frechet",
            "ldm/held_out/kid",
        ];
        let plain = tags(&[]);
        assert!(!plain.iter().any(|t| t.contains("held_out")), "{plain:?}");
        let held = tags(&["stages.ldm.eval_every=10"]);
        assert!(held.contains(&"ldm/held_out/loss".to_string()), "{held:?}");
        assert!(!judged.iter().any(|t| held.contains(&t.to_string())));
        let all = tags(&[
            "stages.ldm.eval_every=10",
            "stages.ldm.needs=[\"vae\", \"clf\"]",
        ]);
        for t in judged.iter().chain(&["ldm/held_out/loss", "eval/kid"]) {
            assert!(all.contains(&t.to_string()), "{t}: {all:?}");
        }
    }
}
