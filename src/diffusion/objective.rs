//! What the network is trained on: noising x_0 to x_t, the regression target (epsilon or v),
//! and reading a prediction back as (epsilon, x_0).

use candle_core::{Device, Result, Tensor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schedule::NoiseSchedule;

/// What the network predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    #[default]
    Epsilon,
    V,
}

/// Per-sample coefficient c[t_i] shaped (B, 1, 1, 1) to scale (B, C, H, W) tensors.
fn per_sample(values: impl Iterator<Item = f64>, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = values.map(|x| x as f32).collect();
    let n = v.len();
    Tensor::from_vec(v, (n, 1, 1, 1), device)
}

/// sqrt(a_t) and sqrt(1 - a_t) for each sample's t.
fn coefficients(
    schedule: &NoiseSchedule,
    t: &[usize],
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let a = |i: &usize| schedule.alphas_cumprod[*i];
    Ok((
        per_sample(t.iter().map(|i| a(i).sqrt()), device)?,
        per_sample(t.iter().map(|i| (1.0 - a(i)).sqrt()), device)?,
    ))
}

/// x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise.
pub fn q_sample(
    schedule: &NoiseSchedule,
    x0: &Tensor,
    t: &[usize],
    noise: &Tensor,
) -> Result<Tensor> {
    let (sa, s1a) = coefficients(schedule, t, x0.device())?;
    x0.broadcast_mul(&sa)? + noise.broadcast_mul(&s1a)?
}

/// The regression target: the noise, or v = sqrt(a_t) noise - sqrt(1 - a_t) x_0.
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
            let (sa, s1a) = coefficients(schedule, t, x0.device())?;
            noise.broadcast_mul(&sa)? - x0.broadcast_mul(&s1a)?
        }
    }
}

/// Min-SNR-gamma weights of the samples' squared errors at timesteps `t`: min(SNR, gamma)/SNR
/// for epsilon, min(SNR, gamma)/(SNR + 1) for v, where SNR = a_t / (1 - a_t). Shaped (B, 1, 1, 1).
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
        }
    };
    per_sample(t.iter().map(weight), device)
}

/// A network output at x_t read back as (epsilon, x_0).
pub fn eps_and_x0(
    prediction: Prediction,
    schedule: &NoiseSchedule,
    x_t: &Tensor,
    t: &[usize],
    output: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (sa, s1a) = coefficients(schedule, t, x_t.device())?;
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
        let x_t = q_sample(&s, &x0, &t, &noise).unwrap();
        for prediction in [Prediction::Epsilon, Prediction::V] {
            let out = target(prediction, &s, &x0, &t, &noise).unwrap();
            let (eps, x0_hat) = eps_and_x0(prediction, &s, &x_t, &t, &out).unwrap();
            assert!(max_diff(&eps, &noise) < 1e-3, "{prediction:?} eps");
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
