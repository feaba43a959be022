//! The held-out measurement of a training stage: every `eval_every` steps the stage measures
//! a fixed set of test images (with fixed timesteps and noise where it needs them, drawn once
//! from their own stream), so the curve is identical across runs and across a resume; with
//! `keep_best` the checkpoint with the best value of one of those metrics is kept out of the
//! rotation, for later stages to load as `checkpoint = "best"`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::settings::Checks;

/// The held-out keys of the autoencoder and diffusion stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct HeldOutSettings {
    /// Measure the held-out metrics every N steps (and at the last step); 0 turns them off.
    pub eval_every: usize,
    /// Test images in the held-out set (the first ones of the test split).
    pub held_out_images: usize,
    /// Keep the checkpoint with the best value of this held-out metric (e.g.
    /// `"held_out/loss"`) out of the rotation, as `checkpoint = "best"` of later stages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_best: Option<String>,
}

impl Default for HeldOutSettings {
    fn default() -> Self {
        Self {
            eval_every: 0,
            held_out_images: 256,
            keep_best: None,
        }
    }
}

/// Most held-out images.
pub const MAX_HELD_OUT: usize = 100_000;

impl HeldOutSettings {
    /// Whether the stage measures at all.
    pub fn enabled(&self) -> bool {
        self.eval_every > 0
    }

    /// Whether the stage measures after `step` of `total` steps.
    pub fn due(&self, step: u64, total: u64) -> bool {
        self.enabled() && (step.is_multiple_of(self.eval_every as u64) || step == total)
    }

    /// Checks against the metrics the stage's kind measures.
    pub fn check(&self, metrics: &[&str]) -> Checks {
        let mut c = Checks::new();
        c.count_in("held_out_images", self.held_out_images, 1, MAX_HELD_OUT);
        if let Some(name) = &self.keep_best {
            if !self.enabled() {
                c.fail(
                    "keep_best",
                    "needs the held-out metrics: set eval_every to a number of steps",
                );
            } else if !metrics.contains(&name.as_str()) {
                c.fail(
                    "keep_best",
                    format!(
                        "`{name}` is not measured by this stage; expected one of: {}",
                        metrics.join(", ")
                    ),
                );
            }
        }
        c
    }
}

/// Whether a larger value of metric `name` is better (PSNR, SSIM, accuracy), else smaller is.
pub fn higher_is_better(name: &str) -> bool {
    ["psnr", "ssim", "accuracy"]
        .iter()
        .any(|m| name.rsplit('/').next() == Some(m))
}

/// The best value of the kept metric so far and the step it was measured at; saved in every
/// checkpoint so a resume keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub step: u64,
    pub value: f64,
}

impl Best {
    /// Whether `value` of metric `name` beats `best` (anything beats nothing; NaN never does).
    pub fn improves(best: Option<Best>, name: &str, value: f64) -> bool {
        if value.is_nan() {
            return false;
        }
        match best {
            None => true,
            Some(b) if higher_is_better(name) => value > b.value,
            Some(b) => value < b.value,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_at_multiples_and_the_last_step_only_when_enabled() {
        let s = HeldOutSettings {
            eval_every: 4,
            ..HeldOutSettings::default()
        };
        let due: Vec<u64> = (1..=10).filter(|&t| s.due(t, 10)).collect();
        assert_eq!(due, [4, 8, 10]);
        assert!(!HeldOutSettings::default().due(10, 10));
    }

    #[test]
    fn best_follows_the_metric_direction() {
        let b = Some(Best {
            step: 1,
            value: 2.0,
        });
        assert!(Best::improves(None, "held_out/loss", 5.0));
        assert!(Best::improves(b, "held_out/loss", 1.5));
        assert!(!Best::improves(b, "held_out/loss", 2.0));
        assert!(Best::improves(b, "held_out/psnr", 2.5));
        assert!(!Best::improves(b, "held_out/psnr", 1.0));
        assert!(!Best::improves(None, "held_out/loss", f64::NAN));
    }

    #[test]
    fn keep_best_needs_eval_every_and_a_measured_metric() {
        let mut s = HeldOutSettings {
            keep_best: Some("held_out/loss".into()),
            ..HeldOutSettings::default()
        };
        let msgs = |s: &HeldOutSettings| -> Vec<String> {
            s.check(&["held_out/loss"])
                .into_vec()
                .into_iter()
                .map(|i| format!("{}: {}", i.key, i.message))
                .collect()
        };
        assert!(msgs(&s)[0].contains("keep_best: needs the held-out metrics"));
        s.eval_every = 10;
        assert!(msgs(&s).is_empty());
        s.keep_best = Some("held_out/psnr".into());
        assert!(msgs(&s)[0].contains("expected one of: held_out/loss"));
        s.held_out_images = 0;
        assert_eq!(msgs(&s).len(), 2);
    }
}
