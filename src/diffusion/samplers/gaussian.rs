//! The exact problem the samplers are tested on: data x_0 ~ N(mu_c, s_c^2) independently per
//! element of channel c. At a noise level a, x = sqrt(a) x_0 + sqrt(1 - a) epsilon is Gaussian
//! with variance v = a s^2 + 1 - a, so the ideal network is closed-form,
//!   E[x_0 | x] = mu + sqrt(a) s^2 / v (x - sqrt(a) mu),  E[epsilon | x] = sqrt(1 - a) / v (x - sqrt(a) mu),
//! and so is the probability-flow ODE, whose solution keeps x's standardised value: from a to a',
//!   x' = sqrt(a') mu + sqrt(v' / v) (x - sqrt(a) mu).

use candle_core::{DType, Device, Result, Tensor};

use super::Denoiser;
use crate::diffusion::objective::Prediction;
use crate::diffusion::schedule::NoiseSchedule;
use crate::rng::Rng;

pub(super) struct Gaussian {
    pub mu: Vec<f64>,
    pub s: Vec<f64>,
    pub schedule: NoiseSchedule,
    /// What the ideal network outputs.
    pub prediction: Prediction,
}

impl Gaussian {
    /// Four channels with means and spreads far from N(0, 1).
    pub fn new(schedule: NoiseSchedule, prediction: Prediction) -> Self {
        Self {
            mu: vec![0.5, -1.0, 0.0, 2.0],
            s: vec![0.3, 0.7, 1.5, 0.1],
            schedule,
            prediction,
        }
    }

    /// f(mu_c, s_c) per channel, shaped (1, C, 1, 1), f64.
    fn per_channel(&self, f: impl Fn(f64, f64) -> f64) -> Result<Tensor> {
        let v: Vec<f64> = self
            .mu
            .iter()
            .zip(&self.s)
            .map(|(&m, &s)| f(m, s))
            .collect();
        Tensor::from_vec(v, (1, self.mu.len(), 1, 1), &Device::Cpu)
    }

    /// Start noise N(0, I), (B, C, side, side), f64.
    pub fn noise(&self, batch: usize, side: usize, rng: &mut Rng) -> Tensor {
        let n = batch * self.mu.len() * side * side;
        Tensor::from_vec(
            rng.normal_vec(n),
            (batch, self.mu.len(), side, side),
            &Device::Cpu,
        )
        .and_then(|t| t.to_dtype(DType::F64))
        .unwrap()
    }

    /// a at the network's timestep t: the schedule's at an integer t, else linear in log sigma
    /// between the neighbours (the inverse of `timestep_of_sigma`).
    pub fn alpha_cumprod_at(&self, t: f64) -> f64 {
        let a = &self.schedule.alphas_cumprod;
        if t.fract() == 0.0 {
            return a[t as usize];
        }
        let (lo, w) = (t.floor() as usize, t.fract());
        let log_sigma = |i: usize| 0.5 * ((1.0 - a[i]) / a[i]).ln();
        let sigma = ((1.0 - w) * log_sigma(lo) + w * log_sigma(lo + 1)).exp();
        1.0 / (1.0 + sigma * sigma)
    }

    /// x - sqrt(a) mu.
    fn centred(&self, x: &Tensor, a: f64) -> Result<Tensor> {
        x.broadcast_sub(&self.per_channel(|m, _| a.sqrt() * m)?)
    }

    /// E[x_0 | x] and E[epsilon | x] at level a.
    pub fn posterior_means(&self, x: &Tensor, a: f64) -> Result<(Tensor, Tensor)> {
        let c = self.centred(x, a)?;
        let v = |s: f64| a * s * s + 1.0 - a;
        let x0 = c
            .broadcast_mul(&self.per_channel(|_, s| a.sqrt() * s * s / v(s))?)?
            .broadcast_add(&self.per_channel(|m, _| m)?)?;
        let eps = c.broadcast_mul(&self.per_channel(|_, s| (1.0 - a).sqrt() / v(s))?)?;
        Ok((x0, eps))
    }

    /// The exact probability-flow ODE solution at a_to from x at a_from.
    pub fn flow(&self, x: &Tensor, a_from: f64, a_to: f64) -> Result<Tensor> {
        let v = |a: f64, s: f64| a * s * s + 1.0 - a;
        self.centred(x, a_from)?
            .broadcast_mul(&self.per_channel(|_, s| (v(a_to, s) / v(a_from, s)).sqrt())?)?
            .broadcast_add(&self.per_channel(|m, _| a_to.sqrt() * m)?)
    }
}

impl Denoiser for Gaussian {
    fn predict(&self, x_t: &Tensor, t: f64) -> Result<Tensor> {
        let a = self.alpha_cumprod_at(t);
        let (x0, eps) = self.posterior_means(x_t, a)?;
        match self.prediction {
            Prediction::Epsilon => Ok(eps),
            Prediction::V => (eps * a.sqrt())? - (x0 * (1.0 - a).sqrt())?,
            Prediction::X0 => Ok(x0),
        }
    }
}
