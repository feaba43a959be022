//! The sampler keys of `diffusion` (its grids), `sample` and `eval` stages.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SamplerKind;
use crate::settings::Checks;

/// How a stage samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SamplerSettings {
    /// `ddim`, `ddpm` (ancestral, all T steps), `euler`, `euler_ancestral`, `heun`, `dpmpp_2m`,
    /// `dpmpp_2m_sde` or `unipc`.
    pub sampler: SamplerKind,
    /// Noise levels visited (network evaluations; Heun takes 2 per step but the last).
    pub sampler_steps: usize,
    /// DDIM eta; 0 is deterministic.
    pub eta: f64,
    /// Classifier-free guidance scale; 1 is the plain conditional model.
    pub guidance: f64,
}

impl Default for SamplerSettings {
    fn default() -> Self {
        Self {
            sampler: SamplerKind::Ddim,
            sampler_steps: 50,
            eta: 0.0,
            guidance: 3.0,
        }
    }
}

/// Largest classifier-free guidance scale accepted (beyond it samples are saturated noise).
pub const MAX_GUIDANCE: f64 = 100.0;

impl SamplerSettings {
    /// Checks against a schedule of `timesteps` steps.
    pub fn check(&self, timesteps: usize) -> Checks {
        let mut c = Checks::new();
        c.count_in("sampler_steps", self.sampler_steps, 1, timesteps);
        if !(self.eta.is_finite() && (0.0..=1.0).contains(&self.eta)) {
            c.fail(
                "eta",
                format!("{} is out of range; expected 0 <= eta <= 1", self.eta),
            );
        }
        check_guidance(&mut c, "guidance", self.guidance);
        c
    }
}

/// A guidance scale in [0, MAX_GUIDANCE].
pub fn check_guidance(c: &mut Checks, key: &str, scale: f64) {
    if !(scale.is_finite() && (0.0..=MAX_GUIDANCE).contains(&scale)) {
        c.fail(
            key,
            format!("{scale} is out of range; expected 0 <= guidance <= {MAX_GUIDANCE}"),
        );
    }
}
