//! Heun's second-order method on the probability-flow ODE (Karras, Aittala, Aila and Laine 2022,
//! "Elucidating the Design Space of Diffusion-Based Generative Models", arXiv 2206.00364,
//! Algorithm 1, deterministic: S_churn = 0).
//!
//! In y = x / sqrt(a), sigma = sqrt((1 - a) / a) the ODE is dy/dsigma = epsilon. An Euler step
//! to sigma' gives y_e; Heun evaluates epsilon' there and takes the trapezoid,
//! y' = y + (sigma' - sigma) (epsilon + epsilon') / 2 = y_e + (sigma' - sigma) (epsilon' -
//! epsilon) / 2, computed in x as x_e + sqrt(a') (sigma' - sigma) (epsilon' - epsilon) / 2 with the
//! Euler step in its DDIM form. The last step (into sigma = 0) and a step from sigma = infinity
//! (a = 0) are plain Euler steps, so N levels cost 2N - 1 evaluations (2N - 2 from a = 0).

use candle_core::{Result, Tensor};

use super::Model;
use super::levels::Level;

/// Heun from the first level to x_0.
pub(super) fn run(model: &Model, levels: &[Level], mut x: Tensor) -> Result<Tensor> {
    for (i, &level) in levels.iter().enumerate() {
        let (eps, x0) = model.eps_x0(&x, level)?;
        let a = level.alpha_cumprod;
        let Some(&next) = levels.get(i + 1) else {
            // Into sigma = 0: the Euler step returns the predicted x_0.
            return Ok(x0);
        };
        let euler =
            ((&x0 * next.alpha_cumprod.sqrt())? + (&eps * (1.0 - next.alpha_cumprod).sqrt())?)?;
        x = if a > 0.0 {
            let (eps_next, _) = model.eps_x0(&euler, next)?;
            let scale =
                next.alpha_cumprod.sqrt() * (next.karras_sigma() - level.karras_sigma()) / 2.0;
            (euler + ((eps_next - eps)? * scale)?)?
        } else {
            euler
        };
    }
    Ok(x)
}
