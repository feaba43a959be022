//! Reverse processes: from pure noise x (B, C, H, W) at the first level down to x_0.
//!
//! Every sampler works in the variables of the forward process, x = alpha x_0 + sigma epsilon with
//! alpha = sqrt(a), sigma = sqrt(1 - a), a = alphas_cumprod, starting from x ~ N(0, I) at the
//! noisiest level it visits (as today's DDIM and diffusers do) and ending at a = 1, where the
//! last step returns the x_0 the network reads at the last level. The levels are the spaced
//! timesteps (`Spacing`), or Karras sigmas between their ends for the samplers that take them
//! (`Sigmas`). Steps from infinite noise (a = 0, zero terminal SNR) and into a = 1 are first
//! order in every sampler, as in k-diffusion and diffusers: a higher-order term there would
//! need a finite log-SNR step.
//!
//! Network evaluations (NFE) are counted per sample: one `Denoiser::predict` call evaluates every
//! sample of the batch once, so NFE is the number of calls. With classifier-free guidance a call
//! runs the conditional and unconditional halves as one batch of 2B rows; it still counts as one
//! evaluation (the UNet's cost per NFE is then doubled).
//!
//! | sampler           | order | NFE for N levels | noise | Karras sigmas |
//! |-------------------|-------|------------------|-------|---------------|
//! | `ddim`            | 1     | N                | eta   | no            |
//! | `ddpm`            | 1     | T (every step)   | yes   | no            |
//! | `euler`           | 1     | N                | no    | yes           |
//! | `euler_ancestral` | 1     | N                | yes   | yes           |
//! | `heun`            | 2     | 2N - 1           | no    | yes           |
//! | `dpmpp_2m`        | 2     | N                | no    | yes           |
//! | `dpmpp_2m_sde`    | 2     | N                | yes   | yes           |
//! | `unipc`           | 3     | N                | no    | yes           |

mod ddim;
mod ddpm;
mod dpm_solver;
mod heun;
mod levels;
mod settings;
mod sigmas;
mod spacing;
mod unipc;

#[cfg(test)]
mod gaussian;
#[cfg(test)]
mod tests;

use std::cell::Cell;

use candle_core::{Result, Tensor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use levels::{Level, levels};
pub use settings::{MAX_GUIDANCE, SamplerSettings, SweepEntry, check_guidance, check_sweep};
pub use sigmas::{KARRAS_RHO, Sigmas, karras_sigmas, timestep_of_sigma};
pub use spacing::{Spacing, timesteps};

use super::objective::{Prediction, eps_and_x0};
use super::schedule::NoiseSchedule;
use super::validate;
use crate::rng::Rng;
use crate::settings::Checks;

/// Samplers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// DDIM (Song et al. 2021) over the spaced timesteps; `eta` 0 is deterministic, 1 ancestral.
    #[default]
    Ddim,
    /// Ancestral DDPM (Ho et al. 2020) over all T timesteps.
    Ddpm,
    /// Euler on the probability-flow ODE (Karras et al. 2022).
    Euler,
    /// Euler with ancestral noise (k-diffusion's `euler_ancestral`).
    EulerAncestral,
    /// Heun's second-order method (Karras et al. 2022), two evaluations per step.
    Heun,
    /// DPM-Solver++(2M) (Lu et al. 2022), second order, one evaluation per step.
    #[serde(rename = "dpmpp_2m")]
    DpmSolver2m,
    /// DPM-Solver++(2M) SDE: the stochastic second-order variant.
    #[serde(rename = "dpmpp_2m_sde")]
    DpmSolver2mSde,
    /// UniPC with B(h) = e^h - 1 (bh2; Zhao et al. 2023), order 2 predictor and corrector.
    #[serde(rename = "unipc")]
    UniPc,
}

impl SamplerKind {
    pub const ALL: [SamplerKind; 8] = [
        Self::Ddim,
        Self::Ddpm,
        Self::Euler,
        Self::EulerAncestral,
        Self::Heun,
        Self::DpmSolver2m,
        Self::DpmSolver2mSde,
        Self::UniPc,
    ];

    /// The name experiment files give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Ddpm => "ddpm",
            Self::Euler => "euler",
            Self::EulerAncestral => "euler_ancestral",
            Self::Heun => "heun",
            Self::DpmSolver2m => "dpmpp_2m",
            Self::DpmSolver2mSde => "dpmpp_2m_sde",
            Self::UniPc => "unipc",
        }
    }

    /// Whether the sampler steps between arbitrary noise levels, so it can take Karras sigmas
    /// (DDIM and DDPM are defined on the schedule's integer timesteps).
    pub fn takes_sigmas(self) -> bool {
        !matches!(self, Self::Ddim | Self::Ddpm)
    }
}

/// The network as a sampler sees it: x_t and one timestep for the whole batch -> output. The
/// timestep is fractional between the schedule's integer steps when sampling on Karras sigmas.
pub trait Denoiser {
    fn predict(&self, x_t: &Tensor, t: f64) -> Result<Tensor>;
}

/// How to sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    pub kind: SamplerKind,
    /// Levels visited: that many network evaluations (Heun 2 steps - 1). DDPM ignores it and
    /// takes every timestep.
    pub steps: usize,
    /// DDIM's eta: 0 deterministic, 1 the ancestral variance.
    pub eta: f64,
    pub spacing: Spacing,
    pub sigmas: Sigmas,
    /// What the network predicts.
    pub prediction: Prediction,
}

/// A finished sample and what it cost.
#[derive(Debug, Clone)]
pub struct Sampled {
    /// x_0, (B, C, H, W).
    pub x: Tensor,
    /// Network evaluations per sample (one per `Denoiser::predict` call).
    pub nfe: usize,
}

/// The denoiser read back as (epsilon, x_0), counting its evaluations.
struct Model<'a> {
    denoiser: &'a dyn Denoiser,
    prediction: Prediction,
    calls: Cell<usize>,
}

impl Model<'_> {
    /// The predicted (epsilon, x_0) at x on `level`.
    fn eps_x0(&self, x: &Tensor, level: Level) -> Result<(Tensor, Tensor)> {
        self.calls.set(self.calls.get() + 1);
        let out = self.denoiser.predict(x, level.t)?;
        eps_and_x0(
            self.prediction,
            &vec![level.alpha_cumprod; x.dim(0)?],
            x,
            &out,
        )
    }
}

/// N(0, I) shaped and typed like `x`.
fn noise_like(x: &Tensor, rng: &mut Rng) -> Result<Tensor> {
    Tensor::from_vec(rng.normal_vec(x.elem_count()), x.shape(), x.device())?.to_dtype(x.dtype())
}

/// Runs the reverse process from pure noise `x` (B, C, H, W) down to x_0. Refuses, naming
/// every problem, what `validate::schedule` and `validate::sampler` refuse for this schedule.
pub fn sample(
    denoiser: &dyn Denoiser,
    schedule: &NoiseSchedule,
    cfg: SamplerConfig,
    x: Tensor,
    rng: &mut Rng,
) -> Result<Sampled> {
    let (timesteps, zero_snr) = (schedule.timesteps(), schedule.has_zero_terminal_snr());
    let mut checks = Checks::new();
    validate::schedule(&mut checks, cfg.prediction, zero_snr, timesteps);
    validate::sampler(&mut checks, &cfg, timesteps, zero_snr);
    let problems: Vec<String> = checks
        .into_vec()
        .into_iter()
        .map(|i| format!("`{}`: {}", i.key, i.message))
        .collect();
    if !problems.is_empty() {
        candle_core::bail!("cannot sample: {}", problems.join("; "));
    }
    let model = Model {
        denoiser,
        prediction: cfg.prediction,
        calls: Cell::new(0),
    };
    let levels = || levels(schedule, cfg.spacing, cfg.sigmas, cfg.steps);
    let x = match cfg.kind {
        SamplerKind::Ddpm => ddpm::run(&model, schedule, x, rng)?,
        SamplerKind::Ddim => ddim::run(&model, &levels(), cfg.eta, x, rng)?,
        SamplerKind::Euler => ddim::run(&model, &levels(), 0.0, x, rng)?,
        SamplerKind::EulerAncestral => ddim::run(&model, &levels(), 1.0, x, rng)?,
        SamplerKind::Heun => heun::run(&model, &levels(), x)?,
        SamplerKind::DpmSolver2m => dpm_solver::run(&model, &levels(), None, x)?,
        SamplerKind::DpmSolver2mSde => dpm_solver::run(&model, &levels(), Some(rng), x)?,
        SamplerKind::UniPc => unipc::run(&model, &levels(), x)?,
    };
    Ok(Sampled {
        x,
        nfe: model.calls.get(),
    })
}
