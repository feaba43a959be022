//! What the network is trained on: noising x_0 to x_t, the regression target (epsilon, v or
//! x_0), its Min-SNR weighting, and reading a prediction back as (epsilon, x_0).

use candle_core::{DType, Device, Result, Tensor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schedule::NoiseSchedule;

/// What the network predicts at x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) epsilon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The noise epsilon (Ho et al. 2020). Cannot be read back as x_0 where a_t = 0, so it is
    /// refused with a zero terminal SNR schedule.
    #[default]
    Epsilon,
    /// v = sqrt(a_t) epsilon - sqrt(1 - a_t) x_0 (Salimans and Ho 2022, arXiv 2202.00512).
    V,
    /// The clean sample x_0 itself.
    X0,
}

/// Per-sample coefficient c[t_i] shaped (B, 1, 1, 1) to scale (B, C, H, W) tensors.
fn per_sample(values: impl Iterator<Item = f64>, dtype: DType, device: &Device) -> Result<Tensor> {
    let v: Vec<f64> = values.collect();
    let n = v.len();
    Tensor::from_vec(v, (n, 1, 1, 1), device)?.to_dtype(dtype)
}

/// sqrt(a) and sqrt(1 - a) for each sample's a = alphas_cumprod[t], in `x`'s dtype.
fn coefficients(alphas_cumprod: &[f64], x: &Tensor) -> Result<(Tensor, Tensor)> {
    let (dtype, device) = (x.dtype(), x.device());
    Ok((
        per_sample(alphas_cumprod.iter().map(|a| a.sqrt()), dtype, device)?,
        per_sample(
            alphas_cumprod.iter().map(|a| (1.0 - a).sqrt()),
            dtype,
            device,
        )?,
    ))
}

fn alphas_at(schedule: &NoiseSchedule, t: &[usize]) -> Vec<f64> {
    t.iter().map(|&i| schedule.alphas_cumprod[i]).collect()
}

/// x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise.
pub fn q_sample(
    schedule: &NoiseSchedule,
    x0: &Tensor,
    t: &[usize],
    noise: &Tensor,
) -> Result<Tensor> {
    let (sa, s1a) = coefficients(&alphas_at(schedule, t), x0)?;
    x0.broadcast_mul(&sa)? + noise.broadcast_mul(&s1a)?
}

/// The regression target: the noise, v = sqrt(a_t) noise - sqrt(1 - a_t) x_0, or x_0. `noise` is
/// the noise the target is defined by (with input perturbation, not the one x_t was built from).
pub fn target(
    prediction: Prediction,
    schedule: &NoiseSchedule,
    x0: &Tensor,
    t: &[usize],
    noise: &Tensor,
) -> Result<Tensor> {
    match prediction {
        Prediction::Epsilon => Ok(noise.clone()),
        Prediction::V => {
            let (sa, s1a) = coefficients(&alphas_at(schedule, t), x0)?;
            noise.broadcast_mul(&sa)? - x0.broadcast_mul(&s1a)?
        }
        Prediction::X0 => Ok(x0.clone()),
    }
}

/// Min-SNR-gamma weights (Hang et al. 2023, arXiv 2303.09556) of the samples' squared errors at
/// timesteps `t`, SNR = a_t / (1 - a_t): min(SNR, gamma)/SNR for epsilon, min(SNR, gamma)/(SNR + 1)
/// for v and min(SNR, gamma) for x_0. Since |x_0 - x^_0|^2 = |e - e^|^2 / SNR = |v - v^|^2 / (SNR + 1),
/// all three weight the x_0 error by the same min(SNR, gamma). Finite wherever SNR > 0, and for
/// v and x_0 also at SNR = 0 (weight 0). Shaped (B, 1, 1, 1), f32.
pub fn min_snr_weights(
    prediction: Prediction,
    schedule: &NoiseSchedule,
    t: &[usize],
    gamma: f64,
    device: &Device,
) -> Result<Tensor> {
    let weight = |i: &usize| {
        let a = schedule.alphas_cumprod[*i];
        let snr = a / (1.0 - a);
        match prediction {
            Prediction::Epsilon => snr.min(gamma) / snr,
            Prediction::V => snr.min(gamma) / (snr + 1.0),
            Prediction::X0 => snr.min(gamma),
        }
    };
    per_sample(t.iter().map(weight), DType::F32, device)
}

/// A network output at x_t read back as (epsilon, x_0), given each sample's a_t. Epsilon cannot
/// give x_0 where a_t = 0, x_0 cannot give epsilon where a_t = 1; v is defined everywhere.
pub fn eps_and_x0(
    prediction: Prediction,
    alphas_cumprod: &[f64],
    x_t: &Tensor,
    output: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (sa, s1a) = coefficients(alphas_cumprod, x_t)?;
    match prediction {
        Prediction::Epsilon => {
            let x0 = (x_t - output.broadcast_mul(&s1a)?)?.broadcast_div(&sa)?;
            Ok((output.clone(), x0))
        }
        Prediction::V => {
            let x0 = (x_t.broadcast_mul(&sa)? - output.broadcast_mul(&s1a)?)?;
            let eps = (output.broadcast_mul(&sa)? + x_t.broadcast_mul(&s1a)?)?;
            Ok((eps, x0))
        }
        Prediction::X0 => {
            let eps = (x_t - output.broadcast_mul(&sa)?)?.broadcast_div(&s1a)?;
            Ok((eps, output.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::BetaSchedule;
    use crate::rng::Rng;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar()
            .unwrap()
    }

    #[test]
    fn min_snr_weights_cap_the_clean_timesteps() {
        let s = NoiseSchedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02);
        let snr = |i: usize| s.alphas_cumprod[i] / (1.0 - s.alphas_cumprod[i]);
        // t = 0 is nearly clean (SNR ~ 1e4), t = 999 nearly pure noise (SNR ~ 4e-5).
        let t = [0, 100, 999];
        let read = |p| {
            min_snr_weights(p, &s, &t, 5.0, &Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let eps = read(Prediction::Epsilon);
        assert!(snr(0) > 5.0 && snr(999) < 5.0);
        assert!((f64::from(eps[0]) - 5.0 / snr(0)).abs() < 1e-6, "{eps:?}");
        assert!((f64::from(eps[1]) - 5.0f64.min(snr(100)) / snr(100)).abs() < 1e-6);
        assert_eq!(eps[2], 1.0);
        let v = read(Prediction::V);
        assert!(
            (f64::from(v[0]) - 5.0 / (snr(0) + 1.0)).abs() < 1e-6,
            "{v:?}"
        );
        assert!((f64::from(v[2]) - snr(999) / (snr(999) + 1.0)).abs() < 1e-6);
        let x0 = read(Prediction::X0);
        assert_eq!(x0[0], 5.0);
        assert!((f64::from(x0[2]) - snr(999)).abs() < 1e-9, "{x0:?}");
    }

    #[test]
    fn predictions_read_and_write_their_config_names() {
        let names: Vec<String> = [Prediction::Epsilon, Prediction::V, Prediction::X0]
            .iter()
            .map(|p| serde_json::to_string(p).unwrap())
            .collect();
        assert_eq!(names, ["\"epsilon\"", "\"v\"", "\"x0\""]);
        assert_eq!(
            serde_json::from_str::<Prediction>("\"x0\"").unwrap(),
            Prediction::X0
        );
    }

    #[test]
    fn q_sample_then_exact_prediction_recovers_x0_and_noise() {
        let s = NoiseSchedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02);
        let mut rng = Rng::new(1);
        let x0 =
            Tensor::from_vec(rng.normal_vec(3 * 2 * 4 * 4), (3, 2, 4, 4), &Device::Cpu).unwrap();
        let noise =
            Tensor::from_vec(rng.normal_vec(3 * 2 * 4 * 4), (3, 2, 4, 4), &Device::Cpu).unwrap();
        let t = [0, 500, 999];
        let alphas: Vec<f64> = t.iter().map(|&i| s.alphas_cumprod[i]).collect();
        let x_t = q_sample(&s, &x0, &t, &noise).unwrap();
        for prediction in [Prediction::Epsilon, Prediction::V, Prediction::X0] {
            let out = target(prediction, &s, &x0, &t, &noise).unwrap();
            let (eps, x0_hat) = eps_and_x0(prediction, &alphas, &x_t, &out).unwrap();
            // epsilon from x_0 divides by sqrt(1 - a_0) = 0.01.
            assert!(
                max_diff(&eps, &noise) < 1e-3,
                "{prediction:?} eps {}",
                max_diff(&eps, &noise)
            );
            // x_0 from epsilon divides by sqrt(a_999) ~ 0.006: allow for f32 rounding.
            assert!(
                max_diff(&x0_hat, &x0) < 2e-2,
                "{prediction:?} x0 {}",
                max_diff(&x0_hat, &x0)
            );
        }
    }

    #[test]
    fn q_sample_at_t0_is_nearly_x0() {
        let s = NoiseSchedule::new(BetaSchedule::Linear, 1000, 1e-4, 0.02);
        let x0 = Tensor::ones((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let noise = Tensor::zeros((1, 1, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let x_t = q_sample(&s, &x0, &[0], &noise).unwrap();
        let v: Vec<f32> = x_t.flatten_all().unwrap().to_vec1().unwrap();
        assert!((v[0] as f64 - 0.9999f64.sqrt()).abs() < 1e-6);
    }
}
