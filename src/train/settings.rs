//! The keys every training stage takes: optimisation, checkpoint cadence, and the EMA of the
//! stages that sample or judge with averaged weights.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::lr::LrDecay;
use crate::settings::Checks;

/// Optimisation settings of a training stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TrainSettings {
    /// Optimizer steps.
    pub steps: usize,
    /// Images per step.
    pub batch_size: usize,
    /// Peak learning rate of Adam.
    pub lr: f64,
    /// Adam betas.
    #[serde(default = "defaults::betas", deserialize_with = "exactly_two")]
    pub betas: [f64; 2],
    /// Decoupled weight decay (AdamW); 0 is plain Adam.
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this; 0 disables clipping.
    #[serde(default = "defaults::grad_clip")]
    pub grad_clip: f64,
    /// Linear learning-rate warm-up steps (at most `steps`).
    #[serde(default)]
    pub warmup_steps: usize,
    /// Learning rate after the warm-up: `constant`, or decaying to zero at the last step along
    /// a `cosine` or a `linear` ramp.
    #[serde(default)]
    pub lr_decay: LrDecay,
    /// Checkpoint every N steps (the last step always is).
    #[serde(default = "defaults::checkpoint_every")]
    pub checkpoint_every: usize,
    /// Newest checkpoints kept.
    #[serde(default = "defaults::keep_checkpoints")]
    pub keep_checkpoints: usize,
}

/// The defaults of the optional training keys.
mod defaults {
    pub fn betas() -> [f64; 2] {
        [0.9, 0.999]
    }
    pub fn grad_clip() -> f64 {
        1.0
    }
    pub fn checkpoint_every() -> usize {
        500
    }
    pub fn keep_checkpoints() -> usize {
        2
    }
}

/// A pair from a list that must hold exactly two numbers (a longer list is an error, not
/// cut short).
fn exactly_two<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[f64; 2], D::Error> {
    let v = Vec::<f64>::deserialize(d)?;
    <[f64; 2]>::try_from(v.as_slice()).map_err(|_| {
        serde::de::Error::invalid_length(v.len(), &"a list of 2 numbers, e.g. [0.9, 0.999]")
    })
}

/// Most optimizer steps of one stage.
pub const MAX_STEPS: usize = 100_000_000;
/// Largest batch.
pub const MAX_BATCH: usize = 1 << 20;

impl TrainSettings {
    pub fn check(&self) -> Checks {
        let mut c = Checks::new();
        c.count_in("steps", self.steps, 1, MAX_STEPS);
        c.count_in("batch_size", self.batch_size, 1, MAX_BATCH);
        c.positive_number("lr", self.lr);
        let [b1, b2] = self.betas;
        c.probability("betas", b1);
        c.probability("betas", b2);
        c.non_negative("weight_decay", self.weight_decay);
        c.non_negative("grad_clip", self.grad_clip);
        c.positive("checkpoint_every", self.checkpoint_every);
        c.positive("keep_checkpoints", self.keep_checkpoints);
        if self.warmup_steps > self.steps {
            c.fail(
                "warmup_steps",
                format!(
                    "{} warm-up steps are more than the stage's {} steps; use at most `steps`",
                    self.warmup_steps, self.steps
                ),
            );
        }
        c
    }
}

/// The EMA of the weights kept by stages that sample (diffusion) or judge (classifier).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct EmaSettings {
    /// EMA decay of the weights used for sampling or judging; 0 disables the EMA.
    pub ema_decay: f64,
}

impl Default for EmaSettings {
    fn default() -> Self {
        Self { ema_decay: 0.999 }
    }
}

impl EmaSettings {
    pub fn check(&self) -> Checks {
        let mut c = Checks::new();
        c.probability("ema_decay", self.ema_decay);
        c
    }
}
