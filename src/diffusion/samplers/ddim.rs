//! DDIM (Song, Meng and Ermon 2021, "Denoising Diffusion Implicit Models", arXiv 2010.02502),
//! which is also Euler and Euler ancestral (Karras, Aittala, Aila and Laine 2022, "Elucidating
//! the Design Space of Diffusion-Based Generative Models", arXiv 2206.00364, Algorithm 1 without
//! churn; the ancestral split of Crowson's k-diffusion).
//!
//! DDIM step from a to a': x' = sqrt(a') x_0 + sqrt(1 - a' - s^2) epsilon + s z, with
//! s = eta sqrt((1 - a') / (1 - a)) sqrt(1 - a / a').
//!
//! In Karras' variables y = x / sqrt(a), sigma = sqrt((1 - a) / a) the probability-flow ODE is
//! dy/dsigma = epsilon, and an Euler step gives y' = y + (sigma' - sigma) epsilon = x_0 +
//! sigma' epsilon: times sqrt(a'), the DDIM step at eta = 0. Euler ancestral steps down to
//! sigma_d = sqrt(sigma'^2 - sigma_u^2) and adds sigma_u z, sigma_u^2 = sigma'^2 (sigma^2 -
//! sigma'^2) / sigma^2; times sqrt(a') these are DDIM's sqrt(1 - a' - s^2) and s at eta = 1. So
//! both run here as DDIM over their levels (Karras sigmas included), in the form that stays
//! finite at a = 0 where sigma is infinite.

use candle_core::{Result, Tensor};

use super::levels::{Level, next_alpha_cumprod};
use super::{Model, noise_like};
use crate::rng::Rng;

/// DDIM with `eta` from the first level to x_0.
pub(super) fn run(
    model: &Model,
    levels: &[Level],
    eta: f64,
    mut x: Tensor,
    rng: &mut Rng,
) -> Result<Tensor> {
    for (i, &level) in levels.iter().enumerate() {
        let (eps, x0) = model.eps_x0(&x, level)?;
        x = step(
            &x0,
            &eps,
            level.alpha_cumprod,
            next_alpha_cumprod(levels, i),
            eta,
            rng,
        )?;
    }
    Ok(x)
}

/// DDIM's noise s and the scale of epsilon, sqrt(1 - a' - s^2), from a to a_prev.
pub(super) fn noise_scales(a: f64, a_prev: f64, eta: f64) -> (f64, f64) {
    let sigma = eta * ((1.0 - a_prev) / (1.0 - a)).sqrt() * (1.0 - a / a_prev).max(0.0).sqrt();
    let dir = (1.0 - a_prev - sigma * sigma).max(0.0).sqrt();
    (sigma, dir)
}

/// One DDIM step from a to a_prev given the predicted x_0 and epsilon; draws noise only if
/// eta > 0 (and a_prev < 1).
pub(super) fn step(
    x0: &Tensor,
    eps: &Tensor,
    a: f64,
    a_prev: f64,
    eta: f64,
    rng: &mut Rng,
) -> Result<Tensor> {
    let (sigma, dir) = noise_scales(a, a_prev, eta);
    let x = ((x0 * a_prev.sqrt())? + (eps * dir)?)?;
    if sigma > 0.0 {
        x + (noise_like(eps, rng)? * sigma)?
    } else {
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claim of the header: k-diffusion's ancestral split is DDIM at eta = 1.
    #[test]
    fn euler_ancestral_split_is_ddim_at_eta_one() {
        for (a, a_next) in [
            (4e-5, 0.01),
            (0.1, 0.3),
            (0.5, 0.51),
            (0.9, 0.9999),
            (0.2, 1.0),
        ] {
            let karras = |a: f64| ((1.0 - a) / a).sqrt();
            let (s, s_next) = (karras(a), karras(a_next));
            let up = (s_next * s_next * (s * s - s_next * s_next) / (s * s)).sqrt();
            let down = (s_next * s_next - up * up).sqrt();
            let (sigma, dir) = noise_scales(a, a_next, 1.0);
            assert!(
                (a_next.sqrt() * up - sigma).abs() < 1e-12,
                "{a} -> {a_next}"
            );
            assert!(
                (a_next.sqrt() * down - dir).abs() < 1e-12,
                "{a} -> {a_next}"
            );
            let (sigma0, dir0) = noise_scales(a, a_next, 0.0);
            assert_eq!(sigma0, 0.0);
            assert!((a_next.sqrt() * s_next - dir0).abs() < 1e-12);
        }
    }
}
