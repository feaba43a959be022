//! The noise levels a sampler visits, noisiest first: the spaced timesteps of the schedule, or
//! Karras sigmas between the first and last of them.

use super::sigmas::{Sigmas, karras_sigmas, timestep_of_sigma};
use super::spacing::{Spacing, timesteps};
use crate::diffusion::schedule::NoiseSchedule;

/// One noise level: the timestep the network is given and a = alphas_cumprod there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Level {
    /// The network's timestep; fractional on Karras sigmas.
    pub t: f64,
    /// a: x = sqrt(a) x_0 + sqrt(1 - a) epsilon.
    pub alpha_cumprod: f64,
}

impl Level {
    /// The schedule's integer timestep `t`.
    pub fn at(schedule: &NoiseSchedule, t: usize) -> Self {
        Self {
            t: t as f64,
            alpha_cumprod: schedule.alphas_cumprod[t],
        }
    }

    /// Karras' sigma = sqrt((1 - a) / a), the noise scale of x / sqrt(a); infinite at a = 0.
    pub fn karras_sigma(self) -> f64 {
        ((1.0 - self.alpha_cumprod) / self.alpha_cumprod).sqrt()
    }
}

/// The levels a sampler with `steps` levels visits on `schedule`, noisiest first (sampling then
/// ends at a = 1). With Karras sigmas, sigma_max and sigma_min are the schedule's sigmas at the
/// first and last spaced timesteps, as diffusers takes them, and each level's timestep is read
/// from its sigma by `timestep_of_sigma`.
pub fn levels(
    schedule: &NoiseSchedule,
    spacing: Spacing,
    sigmas: Sigmas,
    steps: usize,
) -> Vec<Level> {
    let spaced: Vec<Level> = timesteps(spacing, schedule.timesteps(), steps)
        .into_iter()
        .map(|t| Level::at(schedule, t))
        .collect();
    match sigmas {
        Sigmas::Schedule => spaced,
        Sigmas::Karras => {
            let (first, last) = (spaced[0], spaced[spaced.len() - 1]);
            karras_sigmas(first.karras_sigma(), last.karras_sigma(), spaced.len())
                .into_iter()
                .map(|sigma| Level {
                    t: timestep_of_sigma(schedule, sigma),
                    alpha_cumprod: 1.0 / (1.0 + sigma * sigma),
                })
                .collect()
        }
    }
}

/// a at the level after `i`: the next level's, or 1 (x_0) after the last.
pub(super) fn next_alpha_cumprod(levels: &[Level], i: usize) -> f64 {
    levels.get(i + 1).map_or(1.0, |l| l.alpha_cumprod)
}
