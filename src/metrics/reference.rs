//! Real images' feature vectors, as generated images are measured against them: their
//! Gaussian for the Frechet distance, and the vectors themselves for KID.
//!
//! KID's cubic kernel (x.y / d + 1)^3 was made for Inception features, whose coordinates are
//! small and non-negative (x.y / d well below 1). A classifier's penultimate features can be
//! an order of magnitude larger, where the cube of large inner products dominates every sum
//! and the estimate's spread swamps its mean. So every vector is scaled by one number before
//! the kernel, 1 / (the root mean square coordinate of the reference set), which puts a
//! reference vector's own x.x / d at 1 on average. The scale belongs to the reference: every
//! KID measured against one reference (samples, its real split, an autoencoder round trip)
//! uses the same one, so they stay comparable; the Frechet distance is left in the features'
//! own units.

use super::frechet::{self, FrechetError, Gaussian};
use super::kid::{self, Kid, KidError};
use crate::rng::Rng;

/// Subsets KID averages over, and the vectors drawn from each set per subset (capped at the
/// smaller set): Binkowski et al.'s 100 subsets of 1000.
pub const KID_SUBSETS: usize = 100;
pub const KID_SUBSET_SIZE: usize = 1000;

/// The reference features of one measurement.
#[derive(Debug, Clone)]
pub struct RealFeatures {
    dim: usize,
    gaussian: Gaussian,
    /// The vectors multiplied by `scale`.
    scaled: Vec<f32>,
    scale: f32,
}

/// 1 / the root mean square of `features`' values (1 for an all-zero set).
pub fn unit_rms_scale(features: &[f32]) -> f32 {
    let mean_square =
        features.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / features.len().max(1) as f64;
    if mean_square > 0.0 {
        (1.0 / mean_square.sqrt()) as f32
    } else {
        1.0
    }
}

fn scaled(features: &[f32], scale: f32) -> Vec<f32> {
    features.iter().map(|v| v * scale).collect()
}

impl RealFeatures {
    /// `features` (`dim` values per vector) with KID's scale taken from them.
    pub fn new(features: &[f32], dim: usize) -> Result<Self, FrechetError> {
        Self::with_scale(features, dim, unit_rms_scale(features))
    }

    /// `features` with the KID scale of another reference (a part of it measured apart).
    pub fn with_scale(features: &[f32], dim: usize, scale: f32) -> Result<Self, FrechetError> {
        Ok(Self {
            dim,
            gaussian: Gaussian::fit(features, dim)?,
            scaled: scaled(features, scale),
            scale,
        })
    }

    /// The factor KID applies to every vector.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    pub fn gaussian(&self) -> &Gaussian {
        &self.gaussian
    }

    /// The Frechet distance of `features` to the reference.
    pub fn frechet(&self, features: &[f32]) -> Result<f64, FrechetError> {
        frechet::distance(&Gaussian::fit(features, self.dim)?, &self.gaussian)
    }

    /// KID of `features` against the reference ([`KID_SUBSETS`] subsets of up to
    /// [`KID_SUBSET_SIZE`] vectors drawn with `rng`).
    pub fn kid(&self, features: &[f32], rng: &mut Rng) -> Result<Kid, KidError> {
        kid::kid(
            &scaled(features, self.scale),
            &self.scaled,
            self.dim,
            KID_SUBSETS,
            KID_SUBSET_SIZE,
            rng,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_puts_the_mean_square_at_one() {
        let features = [3.0f32, -4.0, 0.0, 5.0];
        let s = unit_rms_scale(&features);
        let ms: f32 = features.iter().map(|v| (v * s).powi(2)).sum::<f32>() / 4.0;
        assert!((ms - 1.0).abs() < 1e-6, "{ms}");
        assert_eq!(unit_rms_scale(&[0.0, 0.0]), 1.0);
    }

    /// Scaling a reference and its samples alike changes the Frechet distance by the square of
    /// the factor and KID not at all: KID is measured in the reference's unit scale.
    #[test]
    fn kid_does_not_depend_on_the_features_units() {
        let mut rng = Rng::new(4);
        let dim = 8;
        let real: Vec<f32> = rng.normal_vec(300 * dim);
        let fake: Vec<f32> = rng.normal_vec(200 * dim).iter().map(|v| v + 0.3).collect();
        let times = |v: &[f32], k: f32| v.iter().map(|x| x * k).collect::<Vec<f32>>();
        let a = RealFeatures::new(&real, dim).unwrap();
        let b = RealFeatures::new(&times(&real, 20.0), dim).unwrap();
        let fa = a.frechet(&fake).unwrap();
        let fb = b.frechet(&times(&fake, 20.0)).unwrap();
        assert!((fb / fa - 400.0).abs() < 1e-2, "{fa} {fb}");
        let ka = a.kid(&fake, &mut Rng::new(1)).unwrap();
        let kb = b.kid(&times(&fake, 20.0), &mut Rng::new(1)).unwrap();
        assert!(
            (ka.mean - kb.mean).abs() < 1e-4 * ka.mean.abs(),
            "{ka:?} {kb:?}"
        );
        assert!(
            ka.mean > 0.0 && ka.std < ka.mean,
            "a shifted set is far: {ka:?}"
        );
        // A part measured apart keeps the whole reference's scale.
        let part = RealFeatures::with_scale(&real[..100 * dim], dim, a.scale()).unwrap();
        assert_eq!(part.scale(), a.scale());
    }
}
