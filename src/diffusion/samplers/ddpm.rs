//! Ancestral DDPM over every timestep (Ho, Jain and Abbeel 2020, "Denoising Diffusion
//! Probabilistic Models", arXiv 2006.11239), with the "fixedlarge" variance beta_t the lesson
//! samples with: x_{t-1} = mean of q(x_{t-1} | x_t, x_0) at the predicted x_0, plus sqrt(beta_t) z.

use candle_core::{Result, Tensor};

use super::levels::Level;
use super::{Model, noise_like};
use crate::diffusion::schedule::NoiseSchedule;
use crate::rng::Rng;

/// T steps from t = T-1 to x_0; no noise is added at the last.
pub(super) fn run(
    model: &Model,
    schedule: &NoiseSchedule,
    mut x: Tensor,
    rng: &mut Rng,
) -> Result<Tensor> {
    for t in (0..schedule.timesteps()).rev() {
        let (_, x0) = model.eps_x0(&x, Level::at(schedule, t))?;
        let a = schedule.alphas_cumprod[t];
        let a_prev = schedule.alpha_cumprod_prev(t);
        let beta = schedule.betas[t];
        // Mean of q(x_{t-1} | x_t, x_0).
        let c0 = beta * a_prev.sqrt() / (1.0 - a);
        let ct = (1.0 - a_prev) * (1.0 - beta).sqrt() / (1.0 - a);
        let mean = ((&x0 * c0)? + (&x * ct)?)?;
        x = if t > 0 {
            (mean + (noise_like(&x, rng)? * beta.sqrt())?)?
        } else {
            mean
        };
    }
    Ok(x)
}
