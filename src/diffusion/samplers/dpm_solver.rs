//! DPM-Solver++(2M) and its SDE variant (Lu, Zhou, Bao, Chen, Li and Zhu 2022, "DPM-Solver++:
//! Fast Solver for Guided Sampling of Diffusion Probabilistic Models", arXiv 2211.01095: the
//! multistep second-order solver of its Algorithm 2, and SDE-DPM-Solver++(2M) with the midpoint
//! second-order term, as k-diffusion and diffusers use it).
//!
//! With alpha = sqrt(a), sigma = sqrt(1 - a) and lambda = log(alpha / sigma), the probability-flow
//! ODE integrated exactly in its linear part reads
//!   x_t = (sigma_t / sigma_s) x_s + sigma_t * integral over [lambda_s, lambda_t] of e^lambda x_0(lambda).
//! Holding x_0 at D over a step of h = lambda_t - lambda_s gives
//!   x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^-h) D,
//! D = m_s (the network's x_0 at s: first order, the DDIM step), or, extrapolating linearly from the
//! previous level's m_p with r = h_p / h, D = m_s + (m_s - m_p) / (2r) (2M: second order, one
//! evaluation per step). The SDE variant solves the reverse SDE the same way:
//!   x_t = (sigma_t / sigma_s) e^-h x_s + alpha_t (1 - e^-2h) (m_s + (m_s - m_p) / (2r))
//!         + sigma_t sqrt(1 - e^-2h) z.
//! A step from a = 0 (lambda = -inf) or into a = 1 (lambda = +inf) has no finite h and is first
//! order; e^-h and sigma_t / sigma_s are computed as ratios of alphas and sigmas, which stay
//! finite there.

use candle_core::{Result, Tensor};

use super::levels::{Level, next_alpha_cumprod};
use super::{Model, noise_like};
use crate::rng::Rng;

/// The coefficients of one step from a_s to a_t (a_s < a_t, a_s < 1, a_t > 0).
pub(super) struct Step {
    /// sigma_t / sigma_s.
    pub sigma_ratio: f64,
    pub alpha_t: f64,
    pub sigma_t: f64,
    /// e^-h = (sigma_t alpha_s) / (alpha_t sigma_s).
    pub exp_neg_h: f64,
    /// h = lambda_t - lambda_s; infinite from a = 0 or into a = 1.
    pub h: f64,
}

/// lambda = log(sqrt(a) / sqrt(1 - a)), half the log-SNR: -inf at a = 0, +inf at a = 1.
fn lambda(a: f64) -> f64 {
    0.5 * (a / (1.0 - a)).ln()
}

impl Step {
    pub fn new(a_s: f64, a_t: f64) -> Self {
        Self {
            sigma_ratio: ((1.0 - a_t) / (1.0 - a_s)).sqrt(),
            alpha_t: a_t.sqrt(),
            sigma_t: (1.0 - a_t).sqrt(),
            exp_neg_h: ((1.0 - a_t) * a_s / (a_t * (1.0 - a_s))).sqrt(),
            h: lambda(a_t) - lambda(a_s),
        }
    }
}

/// The x_0 held over a step: m_s, plus (m_s - m_p) h / (2 h_p) when the previous step's
/// (h_p, m_p) is known and h is finite.
fn extrapolated(m: &Tensor, prev: Option<(f64, &Tensor)>, step: &Step) -> Result<Tensor> {
    match prev {
        Some((h_prev, m_prev)) if step.h.is_finite() => {
            m + ((m - m_prev)? * (step.h / (2.0 * h_prev)))?
        }
        _ => Ok(m.clone()),
    }
}

/// One DPM-Solver++ ODE step from x (at the step's start, where the network read x_0 as `m`):
/// 2M when the previous step's (h_p, m_p) is given, first order otherwise. UniPC predicts with it.
pub(super) fn ode_step(
    x: &Tensor,
    m: &Tensor,
    prev: Option<(f64, &Tensor)>,
    step: &Step,
) -> Result<Tensor> {
    let d = extrapolated(m, prev, step)?;
    (x * step.sigma_ratio)? + (d * (step.alpha_t * (1.0 - step.exp_neg_h)))?
}

/// One SDE-DPM-Solver++(2M) step; draws noise unless it ends at a = 1.
fn sde_step(
    x: &Tensor,
    m: &Tensor,
    prev: Option<(f64, &Tensor)>,
    step: &Step,
    rng: &mut Rng,
) -> Result<Tensor> {
    let decay = step.exp_neg_h * step.exp_neg_h;
    let d = extrapolated(m, prev, step)?;
    let x = ((x * (step.sigma_ratio * step.exp_neg_h))? + (d * (step.alpha_t * (1.0 - decay)))?)?;
    if step.sigma_t > 0.0 {
        x + (noise_like(m, rng)? * (step.sigma_t * (1.0 - decay).sqrt()))?
    } else {
        Ok(x)
    }
}

/// DPM-Solver++(2M) from the first level to x_0, or its SDE variant when given a random stream.
pub(super) fn run(
    model: &Model,
    levels: &[Level],
    mut noise: Option<&mut Rng>,
    mut x: Tensor,
) -> Result<Tensor> {
    let mut prev: Option<(f64, Tensor)> = None;
    for (i, &level) in levels.iter().enumerate() {
        let (_, m) = model.eps_x0(&x, level)?;
        let step = Step::new(level.alpha_cumprod, next_alpha_cumprod(levels, i));
        let history = prev.as_ref().map(|(h, m)| (*h, m));
        x = match noise.as_deref_mut() {
            Some(rng) => sde_step(&x, &m, history, &step, rng)?,
            None => ode_step(&x, &m, history, &step)?,
        };
        prev = step.h.is_finite().then_some((step.h, m));
    }
    Ok(x)
}
