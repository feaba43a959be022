//! Reverse processes: ancestral DDPM over every step (Ho et al. 2020, "fixedlarge" variance, as
//! the lesson samples) and DDIM over a subsequence of steps (Song et al. 2021).

use candle_core::{Result, Tensor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::objective::{Prediction, eps_and_x0};
use super::schedule::NoiseSchedule;
use crate::rng::Rng;
use crate::settings::Checks;

/// Samplers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    #[default]
    Ddim,
    Ddpm,
}

impl SamplerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ddim => "ddim",
            Self::Ddpm => "ddpm",
        }
    }
}

/// How a stage samples: the sampler keys of `diffusion` (its grids), `sample` and `eval` stages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SamplerSettings {
    /// `ddim` or `ddpm` (ancestral, all T steps).
    pub sampler: SamplerKind,
    /// DDIM steps.
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

/// The network as a sampler sees it: x_t and one timestep for the whole batch -> output.
pub trait Denoiser {
    fn predict(&self, x_t: &Tensor, t: usize) -> Result<Tensor>;
}

/// How to sample.
#[derive(Debug, Clone, Copy)]
pub struct SamplerConfig {
    pub kind: SamplerKind,
    /// DDIM steps (DDPM always takes every step).
    pub steps: usize,
    pub eta: f64,
    pub prediction: Prediction,
}

fn noise_like(x: &Tensor, rng: &mut Rng) -> Result<Tensor> {
    Tensor::from_vec(rng.normal_vec(x.elem_count()), x.shape(), x.device())
}

/// The timesteps DDIM visits, descending: `steps` values evenly spread over [T-1, 0].
pub fn ddim_timesteps(timesteps: usize, steps: usize) -> Vec<usize> {
    let steps = steps.clamp(1, timesteps);
    if steps == 1 {
        return vec![timesteps - 1];
    }
    let mut ts: Vec<usize> = (0..steps)
        .map(|i| ((i as f64 * (timesteps - 1) as f64) / (steps - 1) as f64).round() as usize)
        .collect();
    ts.dedup();
    ts.reverse();
    ts
}

/// Runs the reverse process from pure noise `x_t` (B, C, H, W) at t = T-1 down to x_0.
pub fn sample(
    denoiser: &dyn Denoiser,
    schedule: &NoiseSchedule,
    cfg: SamplerConfig,
    x_t: Tensor,
    rng: &mut Rng,
) -> Result<Tensor> {
    match cfg.kind {
        SamplerKind::Ddpm => ddpm(denoiser, schedule, cfg.prediction, x_t, rng),
        SamplerKind::Ddim => ddim(denoiser, schedule, cfg, x_t, rng),
    }
}

fn ddpm(
    denoiser: &dyn Denoiser,
    schedule: &NoiseSchedule,
    prediction: Prediction,
    mut x: Tensor,
    rng: &mut Rng,
) -> Result<Tensor> {
    let b = x.dim(0)?;
    for t in (0..schedule.timesteps()).rev() {
        let out = denoiser.predict(&x, t)?;
        let (_, x0) = eps_and_x0(prediction, schedule, &x, &vec![t; b], &out)?;
        let a = schedule.alphas_cumprod[t];
        let a_prev = schedule.alpha_cumprod_prev(t);
        let beta = schedule.betas[t];
        // Mean of q(x_{t-1} | x_t, x_0).
        let c0 = beta * a_prev.sqrt() / (1.0 - a);
        let ct = (1.0 - a_prev) * (1.0 - beta).sqrt() / (1.0 - a);
        let mean = ((&x0 * c0)? + (&x * ct)?)?;
        x = if t > 0 {
            // "fixedlarge" variance: beta_t (no noise is added at the last step).
            (mean + (noise_like(&x, rng)? * beta.sqrt())?)?
        } else {
            mean
        };
    }
    Ok(x)
}

fn ddim(
    denoiser: &dyn Denoiser,
    schedule: &NoiseSchedule,
    cfg: SamplerConfig,
    mut x: Tensor,
    rng: &mut Rng,
) -> Result<Tensor> {
    let b = x.dim(0)?;
    let ts = ddim_timesteps(schedule.timesteps(), cfg.steps);
    for (i, &t) in ts.iter().enumerate() {
        let out = denoiser.predict(&x, t)?;
        let (eps, x0) = eps_and_x0(cfg.prediction, schedule, &x, &vec![t; b], &out)?;
        let a = schedule.alphas_cumprod[t];
        let a_prev = ts.get(i + 1).map_or(1.0, |&p| schedule.alphas_cumprod[p]);
        let sigma =
            cfg.eta * ((1.0 - a_prev) / (1.0 - a)).sqrt() * (1.0 - a / a_prev).max(0.0).sqrt();
        let dir = (1.0 - a_prev - sigma * sigma).max(0.0).sqrt();
        x = ((&x0 * a_prev.sqrt())? + (&eps * dir)?)?;
        if sigma > 0.0 {
            x = (x + (noise_like(&eps, rng)? * sigma)?)?;
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::BetaSchedule;
    use candle_core::Device;

    /// A denoiser that knows the data is the constant `target`.
    struct Oracle {
        schedule: NoiseSchedule,
        target: f32,
    }

    impl Denoiser for Oracle {
        fn predict(&self, x_t: &Tensor, t: usize) -> Result<Tensor> {
            let a = self.schedule.alphas_cumprod[t];
            let x0 = x_t.ones_like()?.affine(f64::from(self.target), 0.0)?;
            (x_t - (x0 * a.sqrt())?)? / (1.0 - a).sqrt()
        }
    }

    fn start(rng: &mut Rng) -> Tensor {
        Tensor::from_vec(rng.normal_vec(2 * 4), (2, 1, 2, 2), &Device::Cpu).unwrap()
    }

    #[test]
    fn ddim_timesteps_span_the_schedule() {
        assert_eq!(ddim_timesteps(1000, 5), vec![999, 749, 500, 250, 0]);
        assert_eq!(ddim_timesteps(10, 10), (0..10).rev().collect::<Vec<_>>());
        assert_eq!(ddim_timesteps(10, 50).len(), 10);
    }

    #[test]
    fn samplers_reach_the_data_an_oracle_knows() {
        let schedule = NoiseSchedule::new(BetaSchedule::Linear, 100, 1e-4, 0.2);
        let oracle = Oracle {
            schedule: schedule.clone(),
            target: 0.5,
        };
        for (kind, eta) in [
            (SamplerKind::Ddim, 0.0),
            (SamplerKind::Ddim, 1.0),
            (SamplerKind::Ddpm, 0.0),
        ] {
            let cfg = SamplerConfig {
                kind,
                steps: 20,
                eta,
                prediction: Prediction::Epsilon,
            };
            let mut rng = Rng::new(4);
            let x = sample(&oracle, &schedule, cfg, start(&mut rng), &mut rng).unwrap();
            let v: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                v.iter().all(|x| (x - 0.5).abs() < 1e-2),
                "{kind:?} eta {eta}: {v:?}"
            );
        }
    }

    #[test]
    fn ddim_with_eta_zero_is_deterministic() {
        let schedule = NoiseSchedule::new(BetaSchedule::Linear, 100, 1e-4, 0.2);
        let oracle = Oracle {
            schedule: schedule.clone(),
            target: -0.3,
        };
        let cfg = SamplerConfig {
            kind: SamplerKind::Ddim,
            steps: 10,
            eta: 0.0,
            prediction: Prediction::Epsilon,
        };
        let x0 = start(&mut Rng::new(1));
        let a = sample(&oracle, &schedule, cfg, x0.clone(), &mut Rng::new(2)).unwrap();
        let b = sample(&oracle, &schedule, cfg, x0, &mut Rng::new(3)).unwrap();
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.flatten_all().unwrap().to_vec1().unwrap(),
            b.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(a, b, "eta = 0 must not draw noise");
    }
}
