//! Karras sigmas (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
//! Generative Models", arXiv 2206.00364, Eq. 5): noise levels denser near the data, and the
//! fractional timestep of a sigma that lies between the schedule's own.
//!
//! sigma = sqrt((1 - a) / a) is the noise scale of x / sqrt(a); the schedule's sigma_t rise with t.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diffusion::schedule::NoiseSchedule;

/// The exponent the paper uses (and finds best) for its schedule.
pub const KARRAS_RHO: f64 = 7.0;

/// Where the levels between the first and last spaced timesteps lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sigmas {
    /// The schedule's own, at the spaced timesteps.
    #[default]
    Schedule,
    /// Karras et al.'s, rho = 7, between the sigmas of the first and last spaced timesteps.
    Karras,
}

impl Sigmas {
    pub const ALL: [Sigmas; 2] = [Self::Schedule, Self::Karras];

    /// The name experiment files give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::Karras => "karras",
        }
    }
}

/// `n` sigmas from `sigma_max` down to `sigma_min`, evenly spaced in sigma^(1/rho), rho = 7:
/// sigma_i = (max^(1/rho) + i/(n-1) (min^(1/rho) - max^(1/rho)))^rho. One sigma is `sigma_max`.
pub fn karras_sigmas(sigma_max: f64, sigma_min: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![sigma_max];
    }
    let (hi, lo) = (
        sigma_max.powf(1.0 / KARRAS_RHO),
        sigma_min.powf(1.0 / KARRAS_RHO),
    );
    (0..n)
        .map(|i| (hi + i as f64 / (n - 1) as f64 * (lo - hi)).powf(KARRAS_RHO))
        .collect()
}

/// The timestep of `sigma`: linear in log sigma between the two schedule timesteps whose sigmas
/// enclose it (as diffusers interpolates), clamped to [0, T-1]. Needs finite sigmas, so not
/// with a zero terminal SNR schedule.
pub fn timestep_of_sigma(schedule: &NoiseSchedule, sigma: f64) -> f64 {
    let log_sigmas: Vec<f64> = schedule
        .alphas_cumprod
        .iter()
        .map(|a| 0.5 * ((1.0 - a) / a).ln())
        .collect();
    let last = log_sigmas.len() - 1;
    if last == 0 {
        return 0.0;
    }
    let target = sigma.ln();
    // The first timestep whose sigma is above the target, so the target lies in [hi - 1, hi].
    let hi = log_sigmas.partition_point(|&s| s <= target).clamp(1, last);
    let (a, b) = (log_sigmas[hi - 1], log_sigmas[hi]);
    let w = ((target - a) / (b - a)).clamp(0.0, 1.0);
    (hi - 1) as f64 + w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::BetaSchedule;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs()
    }

    #[test]
    fn karras_sigmas_follow_the_formula_from_end_to_end() {
        let s = karras_sigmas(80.0, 0.002, 3);
        assert_eq!(s.len(), 3);
        assert!(close(s[0], 80.0, 1e-12), "{s:?}");
        assert!(close(s[2], 0.002, 1e-12), "{s:?}");
        let mid = ((80f64.powf(1.0 / 7.0) + 0.002f64.powf(1.0 / 7.0)) / 2.0).powi(7);
        assert!(close(s[1], mid, 1e-12), "{s:?}");
        let many = karras_sigmas(14.6, 0.03, 25);
        assert!(many.windows(2).all(|w| w[1] < w[0]));
        assert_eq!(karras_sigmas(5.0, 0.1, 1), vec![5.0]);
    }

    #[test]
    fn timestep_of_sigma_interpolates_log_sigma_between_the_schedules() {
        let s = NoiseSchedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02);
        let sigma = |t: usize| ((1.0 - s.alphas_cumprod[t]) / s.alphas_cumprod[t]).sqrt();
        for t in [0, 1, 10, 500, 998, 999] {
            assert!(
                (timestep_of_sigma(&s, sigma(t)) - t as f64).abs() < 1e-9,
                "{t}"
            );
        }
        let between = (sigma(10) * sigma(11)).sqrt();
        assert!((timestep_of_sigma(&s, between) - 10.5).abs() < 1e-9);
        assert_eq!(timestep_of_sigma(&s, sigma(0) / 2.0), 0.0);
        assert_eq!(timestep_of_sigma(&s, sigma(999) * 2.0), 999.0);
    }
}
