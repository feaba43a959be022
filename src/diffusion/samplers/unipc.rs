//! UniPC (Zhao, Bai, Rao, Zhou and Lu 2023, "UniPC: A Unified Predictor-Corrector Framework for
//! Fast Sampling of Diffusion Models", arXiv 2302.04867) with data prediction, B(h) = e^h - 1
//! ("bh2") and order 2, as diffusers' default UniPC.
//!
//! Notation as in `dpm_solver`: alpha = sqrt(a), sigma = sqrt(1 - a), lambda = log(alpha / sigma),
//! a step from s to t of h = lambda_t - lambda_s, m the network's x_0 at a level.
//!
//! Predictor (UniP-2, rho = 1/2): with B(h) = e^h - 1 it reads x_t = (sigma_t / sigma_s) x_s +
//! alpha_t (1 - e^-h) (m_s + (m_s - m_p) / (2r)), r = h_p / h, which is the DPM-Solver++(2M)
//! step, so it is `dpm_solver::ode_step` (first order at the first step).
//!
//! Corrector (UniC): once the network has read m_t at the predicted x_t (the evaluation the next
//! step needs anyway, so no extra cost), the step from s is redone with m_t as one more point:
//!   x_t^c = (sigma_t / sigma_s) x_s + alpha_t (1 - e^-h) (m_s + rho_p D_p + rho_t D_t),
//!   D_t = m_t - m_s,  D_p = (m_p - m_s) / r_p,  r_p = (lambda_p - lambda_s) / h = -h_p / h.
//! The rhos make the step exact for x_0 quadratic in lambda: writing the exact step's remainder as
//! alpha_t (I_1 x_0' + I_2 x_0''), I_1 = h - 1 + e^-h, I_2 = h^2 / 2 - h + 1 - e^-h, they solve
//!   rho_p + rho_t = b_1 = I_1 / (h (1 - e^-h)),   r_p rho_p + rho_t = b_2 = 2 I_2 / (h^2 (1 - e^-h)).
//! Without an earlier point (the first step) rho_t = 1/2, the paper's UniC-1. The corrected x_t
//! is where the next step starts; the network's m_t (read at the predicted x_t) is kept. The last
//! step, into a = 1, is first order and returns the last m; a step from a = 0 is not corrected.

use candle_core::{Result, Tensor};

use super::Model;
use super::dpm_solver::{Step, ode_step};
use super::levels::{Level, next_alpha_cumprod};

/// A step taken by the predictor, kept until the network reads x_0 at its end.
struct Taken {
    /// Where the step started.
    x_s: Tensor,
    /// The network's x_0 there.
    m_s: Tensor,
    step: Step,
    /// The step before it: (h_p, m_p).
    prev: Option<(f64, Tensor)>,
}

/// UniC's rho_p and rho_t for a step of h whose earlier point is at r_p = -h_p / h.
fn corrector_weights(h: f64, r_p: f64) -> (f64, f64) {
    let one_minus_e = -(-h).exp_m1();
    let i1 = h + (-h).exp_m1();
    let i2 = h * h / 2.0 - h - (-h).exp_m1();
    let b1 = i1 / (h * one_minus_e);
    let b2 = 2.0 * i2 / (h * h * one_minus_e);
    ((b1 - b2) / (1.0 - r_p), (b2 - r_p * b1) / (1.0 - r_p))
}

/// The step redone with the network's x_0 at its end, `m_t`.
fn correct(taken: &Taken, m_t: &Tensor) -> Result<Tensor> {
    let step = &taken.step;
    let d_t = (m_t - &taken.m_s)?;
    let terms = match &taken.prev {
        None => (d_t * 0.5)?,
        Some((h_p, m_p)) => {
            let r_p = -h_p / step.h;
            let (rho_p, rho_t) = corrector_weights(step.h, r_p);
            let d_p = ((m_p - &taken.m_s)? / r_p)?;
            ((d_p * rho_p)? + (d_t * rho_t)?)?
        }
    };
    (&taken.x_s * step.sigma_ratio)?
        + ((&taken.m_s + terms)? * (step.alpha_t * (1.0 - step.exp_neg_h)))?
}

/// UniPC-bh2 from the first level to x_0.
pub(super) fn run(model: &Model, levels: &[Level], mut x: Tensor) -> Result<Tensor> {
    let mut taken: Option<Taken> = None;
    for (i, &level) in levels.iter().enumerate() {
        let (_, m) = model.eps_x0(&x, level)?;
        if let Some(t) = &taken {
            x = correct(t, &m)?;
        }
        let step = Step::new(level.alpha_cumprod, next_alpha_cumprod(levels, i));
        let prev = taken.take().map(|t| (t.step.h, t.m_s));
        let next = ode_step(&x, &m, prev.as_ref().map(|(h, m)| (*h, m)), &step)?;
        taken = step.h.is_finite().then_some(Taken {
            x_s: x,
            m_s: m,
            step,
            prev,
        });
        x = next;
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn scalar(v: f64) -> Tensor {
        Tensor::new(&[v], &Device::Cpu).unwrap()
    }

    fn value(t: &Tensor) -> f64 {
        t.to_vec1::<f64>().unwrap()[0]
    }

    /// The corrector's claim: exact when x_0 is quadratic in lambda. The exact step is
    /// x_t = (sigma_t / sigma_s) x_s + sigma_t * integral of e^lambda x_0(lambda) over the step,
    /// taken here by Simpson's rule.
    #[test]
    fn corrector_is_exact_for_x0_quadratic_in_lambda() {
        let x0 = |l: f64| 0.3 - 0.7 * l + 0.25 * l * l;
        let lambda = |a: f64| 0.5 * (a / (1.0 - a)).ln();
        let (a_p, a_s, a_t) = (0.2, 0.35, 0.6);
        let (l_p, l_s, l_t) = (lambda(a_p), lambda(a_s), lambda(a_t));
        let step = Step::new(a_s, a_t);
        let x_s = 0.9;
        let n = 2000;
        let dl = (l_t - l_s) / n as f64;
        let f = |k: usize| {
            let l = l_s + k as f64 * dl;
            l.exp() * x0(l)
        };
        let simpson = (1..n)
            .map(|k| if k % 2 == 1 { 4.0 } else { 2.0 } * f(k))
            .sum::<f64>()
            + f(0)
            + f(n);
        let exact = step.sigma_ratio * x_s + step.sigma_t * simpson * dl / 3.0;
        let taken = Taken {
            x_s: scalar(x_s),
            m_s: scalar(x0(l_s)),
            step,
            prev: Some((l_s - l_p, scalar(x0(l_p)))),
        };
        let corrected = value(&correct(&taken, &scalar(x0(l_t))).unwrap());
        assert!(
            (corrected - exact).abs() < 1e-10,
            "{corrected} against {exact}"
        );
    }
}
