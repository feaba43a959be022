//! Noise schedules: the betas of the forward process and the quantities derived from them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::objective::Prediction;
use super::validate;
use crate::settings::Checks;

/// `[schedule]`: the forward noising process and what the network predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Beta schedule: `linear`, `scaled_linear` or `cosine`.
    pub kind: BetaSchedule,
    /// Number of diffusion steps T.
    pub timesteps: usize,
    /// First beta (linear and scaled_linear).
    pub beta_start: f64,
    /// Last beta (linear and scaled_linear).
    pub beta_end: f64,
    /// What the UNet predicts: `epsilon`, `v` or `x0`.
    pub prediction: Prediction,
    /// Rescale the betas to zero terminal SNR (Lin et al. 2023), so alphas_cumprod[T-1] is
    /// exactly 0 and training sees the pure noise sampling starts from; for training and
    /// sampling alike. Needs `prediction = "v"` (or `"x0"`); pair it with `spacing =
    /// "trailing"` and `guidance_rescale` at sampling. Off (false) unless set.
    #[serde(skip_serializing_if = "is_false")]
    pub zero_terminal_snr: bool,
    /// Min-SNR-gamma loss weighting (Hang et al., 2023): each sample's squared error is weighted
    /// by min(SNR_t, gamma) / SNR_t (epsilon) or min(SNR_t, gamma) / (SNR_t + 1) (v), so the
    /// nearly clean timesteps stop dominating the gradient. The paper uses 5. Unset: plain MSE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_snr_gamma: Option<f64>,
    /// Multiplier applied to latents. Unset: 1/std of the first training batch's latents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_factor: Option<f64>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            kind: BetaSchedule::Linear,
            timesteps: 1000,
            beta_start: 1e-4,
            beta_end: 0.02,
            prediction: Prediction::Epsilon,
            zero_terminal_snr: false,
            min_snr_gamma: None,
            scale_factor: None,
        }
    }
}

/// Most diffusion steps T.
pub const MAX_TIMESTEPS: usize = 100_000;

/// Off switches stay out of the serialized settings, so the configurations and fingerprints of
/// runs made before the switch existed still match.
fn is_false(on: &bool) -> bool {
    !on
}

impl ScheduleConfig {
    pub fn check(&self) -> Checks {
        let mut c = Checks::new();
        c.count_in("timesteps", self.timesteps, 1, MAX_TIMESTEPS);
        if self.kind != BetaSchedule::Cosine
            && !(0.0 < self.beta_start && self.beta_start < self.beta_end && self.beta_end < 1.0)
        {
            c.fail(
                "beta_end",
                format!(
                    "betas {}..{} are out of range; expected 0 < beta_start < beta_end < 1",
                    self.beta_start, self.beta_end
                ),
            );
        }
        for (key, value) in [
            ("scale_factor", self.scale_factor),
            ("min_snr_gamma", self.min_snr_gamma),
        ] {
            if let Some(f) = value {
                c.positive_number(key, f);
            }
        }
        validate::schedule(
            &mut c,
            self.prediction,
            self.zero_terminal_snr,
            self.timesteps,
        );
        c
    }

    /// The schedule these settings describe, rescaled to zero terminal SNR when asked.
    pub fn noise_schedule(&self) -> NoiseSchedule {
        let s = NoiseSchedule::new(self.kind, self.timesteps, self.beta_start, self.beta_end);
        if self.zero_terminal_snr {
            s.zero_terminal_snr()
        } else {
            s
        }
    }
}

/// Beta schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    #[default]
    Linear,
    ScaledLinear,
    Cosine,
}

/// The forward process q(x_t | x_0) = N(sqrt(a_t) x_0, (1 - a_t) I), a_t = alphas_cumprod[t].
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    pub betas: Vec<f64>,
    pub alphas_cumprod: Vec<f64>,
}

impl NoiseSchedule {
    pub fn new(kind: BetaSchedule, timesteps: usize, beta_start: f64, beta_end: f64) -> Self {
        let betas = match kind {
            BetaSchedule::Linear => linspace(beta_start, beta_end, timesteps),
            // Stable Diffusion's: linear in sqrt(beta).
            BetaSchedule::ScaledLinear => linspace(beta_start.sqrt(), beta_end.sqrt(), timesteps)
                .into_iter()
                .map(|b| b * b)
                .collect(),
            BetaSchedule::Cosine => cosine_betas(timesteps),
        };
        Self::from_betas(betas)
    }

    fn from_betas(betas: Vec<f64>) -> Self {
        let alphas_cumprod = betas
            .iter()
            .scan(1.0, |acc, b| {
                *acc *= 1.0 - b;
                Some(*acc)
            })
            .collect();
        Self {
            betas,
            alphas_cumprod,
        }
    }

    /// The schedule rescaled to zero terminal SNR (Lin et al. 2023, "Common Diffusion Noise
    /// Schedules and Sample Steps are Flawed", arXiv 2305.08891, Algorithm 1): sqrt(a_t) is
    /// shifted and scaled so that sqrt(a_0) stays and sqrt(a_{T-1}) becomes 0, and the betas are
    /// read back from the ratios, so beta_{T-1} = 1 and alphas_cumprod[T-1] == 0 exactly. The
    /// last timestep is then pure noise, as sampling assumes; epsilon prediction cannot be read
    /// back as x_0 there (see `validate::schedule`).
    pub fn zero_terminal_snr(self) -> Self {
        let roots: Vec<f64> = self.alphas_cumprod.iter().map(|a| a.sqrt()).collect();
        let (first, last) = (roots[0], roots[roots.len() - 1]);
        let rescaled: Vec<f64> = roots
            .iter()
            .map(|r| ((r - last) * first / (first - last)).powi(2))
            .collect();
        let betas = std::iter::once(1.0 - rescaled[0])
            .chain(rescaled.windows(2).map(|w| 1.0 - w[1] / w[0]))
            .collect();
        Self::from_betas(betas)
    }

    /// Whether the last timestep is pure noise (alphas_cumprod[T-1] == 0).
    pub fn has_zero_terminal_snr(&self) -> bool {
        self.alphas_cumprod.last() == Some(&0.0)
    }

    pub fn timesteps(&self) -> usize {
        self.betas.len()
    }

    /// a_{t-1}, with a_{-1} = 1.
    pub fn alpha_cumprod_prev(&self, t: usize) -> f64 {
        if t == 0 {
            1.0
        } else {
            self.alphas_cumprod[t - 1]
        }
    }

    /// Variance of the true posterior q(x_{t-1} | x_t, x_0).
    pub fn posterior_variance(&self, t: usize) -> f64 {
        let a = self.alphas_cumprod[t];
        self.betas[t] * (1.0 - self.alpha_cumprod_prev(t)) / (1.0 - a)
    }
}

fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    (0..n)
        .map(|i| start + (end - start) * i as f64 / (n - 1) as f64)
        .collect()
}

/// Nichol and Dhariwal 2021: a_t = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2), s = 0.008,
/// betas clipped at 0.999.
fn cosine_betas(timesteps: usize) -> Vec<f64> {
    let s = 0.008;
    let f = |t: f64| {
        (((t / timesteps as f64 + s) / (1.0 + s)) * std::f64::consts::FRAC_PI_2)
            .cos()
            .powi(2)
    };
    (0..timesteps)
        .map(|t| (1.0 - f(t as f64 + 1.0) / f(t as f64)).min(0.999))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-12)
    }

    #[test]
    fn linear_schedule_matches_known_values() {
        let s = NoiseSchedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02);
        assert_eq!(s.betas.len(), 1000);
        assert!(close(s.betas[0], 1e-4, 1e-12));
        assert!(close(s.betas[999], 0.02, 1e-12));
        assert!(close(s.alphas_cumprod[0], 0.9999, 1e-12));
        // Closed form: prod_{i<=t} (1 - beta_i), checked against values computed independently.
        assert!(close(
            s.alphas_cumprod[1],
            0.9999 * (1.0 - (1e-4 + 0.0199 / 999.0)),
            1e-12
        ));
        assert!(
            close(s.alphas_cumprod[499], 0.078_587_242_881_778, 1e-9),
            "{}",
            s.alphas_cumprod[499]
        );
        assert!(
            close(s.alphas_cumprod[999], 4.035_829_765_375_675e-5, 1e-9),
            "{}",
            s.alphas_cumprod[999]
        );
    }

    #[test]
    fn scaled_linear_is_linear_in_sqrt_beta() {
        let s = NoiseSchedule::new(BetaSchedule::ScaledLinear, 1000, 0.00085, 0.012);
        assert!(close(s.betas[0], 0.00085, 1e-12));
        assert!(close(s.betas[999], 0.012, 1e-12));
        let mid = ((0.00085f64.sqrt() + 0.012f64.sqrt()) / 2.0).powi(2);
        assert!(close((s.betas[499] + s.betas[500]) / 2.0, mid, 1e-4));
    }

    #[test]
    fn zero_terminal_snr_ends_in_pure_noise_and_keeps_the_start() {
        for (kind, start, end) in [
            (BetaSchedule::Linear, 1e-4, 0.02),
            (BetaSchedule::ScaledLinear, 0.00085, 0.012),
            (BetaSchedule::Cosine, 0.0, 0.0),
        ] {
            let plain = NoiseSchedule::new(kind, 1000, start, end);
            let s = plain.clone().zero_terminal_snr();
            assert!(!plain.has_zero_terminal_snr() && s.has_zero_terminal_snr());
            assert_eq!(s.alphas_cumprod[999], 0.0, "{kind:?}");
            assert_eq!(s.betas[999], 1.0, "{kind:?}");
            assert!(close(s.alphas_cumprod[0], plain.alphas_cumprod[0], 1e-12));
            assert!(
                s.betas[..999].iter().all(|&b| b > 0.0 && b < 1.0),
                "{kind:?}"
            );
            assert!(s.alphas_cumprod.windows(2).all(|w| w[1] < w[0]), "{kind:?}");
            // sqrt(a_t) is an affine map of the old one: check it at the middle.
            let (r0, rl) = (
                plain.alphas_cumprod[0].sqrt(),
                plain.alphas_cumprod[999].sqrt(),
            );
            let mid = (plain.alphas_cumprod[500].sqrt() - rl) * r0 / (r0 - rl);
            assert!(close(s.alphas_cumprod[500].sqrt(), mid, 1e-9), "{kind:?}");
        }
    }

    #[test]
    fn cosine_schedule_decays_to_near_zero() {
        let s = NoiseSchedule::new(BetaSchedule::Cosine, 1000, 0.0, 0.0);
        assert!(s.alphas_cumprod[0] > 0.9999);
        assert!(s.alphas_cumprod[999] < 1e-4);
        assert!(s.betas.iter().all(|&b| b > 0.0 && b <= 0.999));
        assert!(s.alphas_cumprod.windows(2).all(|w| w[1] < w[0]));
    }
}
