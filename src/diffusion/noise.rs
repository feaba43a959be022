//! Changes to the training noise: offset noise (Guttenberg 2023, "Diffusion with Offset Noise",
//! crosslabs.org) and input perturbation (Ning et al. 2023, "Input Perturbation Reduces Exposure
//! Bias in Diffusion Models", arXiv 2301.11706).
//!
//! A training step reads `(input, noise) = TrainingNoise::apply(&noise, rng)`, that is
//! `noise = offset_noise(&noise, offset, rng)`, then `x_t = q_sample(.., &perturbed_input_noise(
//! &noise, gamma, rng))`, `target(.., &noise)`: the offset noise is the noise the network must
//! find, the perturbation only disturbs its input. Both draw nothing when their setting is 0, so
//! the default path's random streams are untouched.

use candle_core::{Result, Tensor};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate;
use crate::rng::Rng;
use crate::settings::Checks;

/// The training noise keys of a `diffusion` stage. They change only what the network is
/// trained on, not the forward process sampling inverts, so they are the stage's (two
/// diffusion stages over one autoencoder can compare them) and not `[schedule]`'s.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct TrainingNoise {
    /// Offset noise (Guttenberg 2023): each sample's noise gets one N(0, noise_offset^2) draw
    /// per channel added at every position, so the network learns to change an image's mean.
    /// 0 (the default) is off; 0.1 is usual; at most 1.
    #[serde(skip_serializing_if = "is_zero")]
    pub noise_offset: f64,
    /// Input perturbation (Ning et al. 2023): x_t is built from noise + gamma N(0, I) while the
    /// target keeps the plain noise, against exposure bias. 0 (the default) is off; the paper
    /// uses 0.1; below 1.
    #[serde(skip_serializing_if = "is_zero")]
    pub input_perturbation: f64,
}

/// Off settings stay out of the serialized stage, so the configurations and fingerprints of
/// runs made before these keys existed still match.
fn is_zero(value: &f64) -> bool {
    *value == 0.0
}

impl TrainingNoise {
    pub fn check(&self) -> Checks {
        let mut c = Checks::new();
        validate::noise_offset(&mut c, self.noise_offset);
        validate::input_perturbation(&mut c, self.input_perturbation);
        c
    }

    /// The noise a training step's x_t is built from and the noise its target is defined by,
    /// from the step's plain `noise`, drawing from `rng` only what the settings switch on.
    pub fn apply(&self, noise: &Tensor, rng: &mut Rng) -> Result<(Tensor, Tensor)> {
        let target = offset_noise(noise, self.noise_offset, rng)?;
        let input = perturbed_input_noise(&target, self.input_perturbation, rng)?;
        Ok((input, target))
    }
}

/// noise + offset * N(0, 1), one draw per (sample, channel) shared by every position: the
/// network also learns to move an image's mean, which plain noise barely perturbs at high t.
/// `noise` is (B, C, ...); draws B * C normals unless `offset` is 0.
pub fn offset_noise(noise: &Tensor, offset: f64, rng: &mut Rng) -> Result<Tensor> {
    if offset == 0.0 {
        return Ok(noise.clone());
    }
    let dims = noise.dims();
    let (b, c) = (dims[0], dims[1]);
    let mut shape = vec![1; dims.len()];
    shape[..2].copy_from_slice(&[b, c]);
    let shift = Tensor::from_vec(rng.normal_vec(b * c), shape, noise.device())?;
    noise.broadcast_add(&(shift.to_dtype(noise.dtype())? * offset)?)
}

/// The noise x_t is built from under input perturbation: noise + gamma * N(0, 1) at every
/// element, so training sees inputs slightly off the forward process, as sampling does after its
/// own errors. Draws one normal per element unless `gamma` is 0.
pub fn perturbed_input_noise(noise: &Tensor, gamma: f64, rng: &mut Rng) -> Result<Tensor> {
    if gamma == 0.0 {
        return Ok(noise.clone());
    }
    let extra = Tensor::from_vec(
        rng.normal_vec(noise.elem_count()),
        noise.shape(),
        noise.device(),
    )?;
    noise + (extra.to_dtype(noise.dtype())? * gamma)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn mean_and_std(v: &[f32]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n;
        (mean, var.sqrt())
    }

    fn noise(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        Tensor::from_vec(Rng::new(seed).normal_vec(n), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn zero_settings_change_nothing_and_draw_nothing() {
        let eps = noise((2, 3, 4, 4), 1);
        let mut rng = Rng::new(9);
        let a = offset_noise(&eps, 0.0, &mut rng).unwrap();
        let b = perturbed_input_noise(&eps, 0.0, &mut rng).unwrap();
        assert_eq!(values(&a), values(&eps));
        assert_eq!(values(&b), values(&eps));
        assert_eq!(
            rng,
            Rng::new(9),
            "a zero setting must not advance the stream"
        );
    }

    #[test]
    fn offset_noise_shifts_each_channel_of_each_sample_by_one_draw() {
        let (b, c, h, w) = (64, 8, 4, 4);
        let eps = noise((b, c, h, w), 2);
        let mut rng = Rng::new(3);
        let shifted = offset_noise(&eps, 0.1, &mut rng).unwrap();
        let diff = values(&(shifted - &eps).unwrap());
        let per_channel: Vec<f32> = diff.chunks(h * w).map(|chunk| chunk[0]).collect();
        for (chunk, &first) in diff.chunks(h * w).zip(&per_channel) {
            assert!(chunk.iter().all(|&d| (d - first).abs() < 1e-6), "{chunk:?}");
        }
        // 512 draws of 0.1 N(0, 1): the standard deviation within 15%, the mean within 4 SE.
        let (mean, std) = mean_and_std(&per_channel);
        assert!((std - 0.1).abs() < 0.015, "std {std}");
        assert!(mean.abs() < 4.0 * 0.1 / (512f64).sqrt(), "mean {mean}");
        assert_eq!(rng.clone(), {
            let mut r = Rng::new(3);
            r.normal_vec(b * c);
            r
        });
    }

    #[test]
    fn training_noise_offsets_the_target_and_perturbs_only_the_input() {
        let eps = noise((4, 2, 3, 3), 6);
        let off = TrainingNoise::default();
        let mut rng = Rng::new(1);
        let (input, target) = off.apply(&eps, &mut rng).unwrap();
        assert_eq!(
            (values(&input), values(&target)),
            (values(&eps), values(&eps))
        );
        assert_eq!(rng, Rng::new(1));
        let both = TrainingNoise {
            noise_offset: 0.1,
            input_perturbation: 0.2,
        };
        let mut rng = Rng::new(1);
        let (input, target) = both.apply(&eps, &mut rng).unwrap();
        let mut again = Rng::new(1);
        let shifted = offset_noise(&eps, 0.1, &mut again).unwrap();
        let perturbed = perturbed_input_noise(&shifted, 0.2, &mut again).unwrap();
        assert_eq!(values(&target), values(&shifted));
        assert_eq!(values(&input), values(&perturbed));
        assert_ne!(values(&input), values(&target));
        assert_eq!(
            rng, again,
            "offset first, then the perturbation, from one stream"
        );
        let bad = TrainingNoise {
            noise_offset: -1.0,
            input_perturbation: 1.0,
        };
        let keys: Vec<String> = bad.check().into_vec().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["noise_offset", "input_perturbation"]);
    }

    #[test]
    fn input_perturbation_adds_gamma_scaled_noise_everywhere() {
        let eps = noise((16, 4, 8, 8), 4);
        let mut rng = Rng::new(5);
        let perturbed = perturbed_input_noise(&eps, 0.2, &mut rng).unwrap();
        let (mean, std) = mean_and_std(&values(&(perturbed - &eps).unwrap()));
        // 4096 draws: std within 5%, mean within 4 SE.
        assert!((std - 0.2).abs() < 0.01, "std {std}");
        assert!(mean.abs() < 4.0 * 0.2 / 64.0, "mean {mean}");
    }
}
