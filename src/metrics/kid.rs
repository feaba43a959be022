//! The Kernel Inception Distance (Binkowski et al. 2018, "Demystifying MMD GANs", arXiv
//! 1801.01401): the squared maximum mean discrepancy between two feature sets under the cubic
//! polynomial kernel k(x, y) = (x.y / d + 1)^3, estimated without bias, averaged over random
//! subsets of equal size, with its standard deviation over the subsets. Unlike the Frechet
//! distance its expected value does not depend on the number of samples.
//!
//! The unbiased estimate for sets X (m vectors) and Y (n vectors) leaves out the diagonal of
//! the within-set sums:
//!
//! MMD^2 = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
//!       - 2 sum_{i, j} k(x_i, y_j) / (m n).

use candle_core::{Device, Tensor};
use thiserror::Error;

use crate::rng::Rng;

#[derive(Debug, Error)]
pub enum KidError {
    #[error("the kernel distance needs at least 2 feature vectors per set, got {0}")]
    TooFew(usize),
    #[error("{values} values do not split into feature vectors of width {dim}")]
    Ragged { values: usize, dim: usize },
    #[error("kernel matrix: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// The estimate over subsets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kid {
    /// Mean of the subsets' unbiased MMD^2.
    pub mean: f64,
    /// Standard deviation of the subsets' MMD^2 (0 with one subset).
    pub std: f64,
    pub subsets: usize,
    /// Vectors drawn from each set per subset.
    pub subset_size: usize,
}

/// Vectors of `features`, checked to be whole vectors of width `dim`.
fn count(features: &[f32], dim: usize) -> Result<usize, KidError> {
    if dim == 0 || !features.len().is_multiple_of(dim) {
        return Err(KidError::Ragged {
            values: features.len(),
            dim,
        });
    }
    let n = features.len() / dim;
    if n < 2 {
        return Err(KidError::TooFew(n));
    }
    Ok(n)
}

/// Sum of k over all pairs of rows of `a` (r x d) and `b` (s x d), and over the diagonal when
/// `a` and `b` are the same set.
fn kernel_sums(a: &[f32], b: &[f32], dim: usize) -> Result<(f64, f64), KidError> {
    let (r, s) = (a.len() / dim, b.len() / dim);
    let ta = Tensor::from_slice(a, (r, dim), &Device::Cpu)?;
    let tb = Tensor::from_slice(b, (s, dim), &Device::Cpu)?;
    let gram: Vec<Vec<f32>> = ta.matmul(&tb.t()?)?.to_vec2()?;
    let k = |g: f32| (f64::from(g) / dim as f64 + 1.0).powi(3);
    let all = gram.iter().flatten().map(|&g| k(g)).sum();
    let diagonal = (0..r.min(s)).map(|i| k(gram[i][i])).sum();
    Ok((all, diagonal))
}

/// The unbiased MMD^2 between the whole sets `x` and `y` (`dim` values per vector).
pub fn mmd2_unbiased(x: &[f32], y: &[f32], dim: usize) -> Result<f64, KidError> {
    let (m, n) = (count(x, dim)? as f64, count(y, dim)? as f64);
    let (xx, x_diag) = kernel_sums(x, x, dim)?;
    let (yy, y_diag) = kernel_sums(y, y, dim)?;
    let (xy, _) = kernel_sums(x, y, dim)?;
    Ok((xx - x_diag) / (m * (m - 1.0)) + (yy - y_diag) / (n * (n - 1.0)) - 2.0 * xy / (m * n))
}

/// `size` vectors of `features` drawn without replacement.
fn subset(features: &[f32], dim: usize, size: usize, rng: &mut Rng) -> Vec<f32> {
    let mut idx: Vec<usize> = (0..features.len() / dim).collect();
    rng.shuffle(&mut idx);
    idx[..size]
        .iter()
        .flat_map(|&i| &features[i * dim..(i + 1) * dim])
        .copied()
        .collect()
}

/// KID between `x` and `y`: `subsets` draws of `subset_size` vectors from each (capped at the
/// smaller set), drawn with `rng`.
pub fn kid(
    x: &[f32],
    y: &[f32],
    dim: usize,
    subsets: usize,
    subset_size: usize,
    rng: &mut Rng,
) -> Result<Kid, KidError> {
    let size = subset_size.min(count(x, dim)?).min(count(y, dim)?).max(2);
    let values: Vec<f64> = (0..subsets.max(1))
        .map(|_| {
            let (a, b) = (subset(x, dim, size, rng), subset(y, dim, size, rng));
            mmd2_unbiased(&a, &b, dim)
        })
        .collect::<Result<_, _>>()?;
    let k = values.len() as f64;
    let mean = values.iter().sum::<f64>() / k;
    let std = if values.len() > 1 {
        (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (k - 1.0)).sqrt()
    } else {
        0.0
    };
    Ok(Kid {
        mean,
        std,
        subsets: values.len(),
        subset_size: size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors of N(mean, I) in `dim` dimensions.
    fn gaussian(n: usize, mean: &[f64], rng: &mut Rng) -> Vec<f32> {
        (0..n)
            .flat_map(|_| {
                mean.iter()
                    .map(|m| (m + rng.normal()) as f32)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// E[(x.y / d + 1)^3] for independent x ~ N(a, I), y ~ N(b, I): the sum S of the
    /// independent products p_i = x_i y_i has its mean, variance and third cumulant summed
    /// over coordinates, from E[p] = a b, E[p^2] = (1 + a^2)(1 + b^2),
    /// E[p^3] = (a^3 + 3a)(b^3 + 3b).
    fn expected_kernel(a: &[f64], b: &[f64]) -> f64 {
        let d = a.len() as f64;
        let (mut mu, mut var, mut k3) = (0.0, 0.0, 0.0);
        for (&ai, &bi) in a.iter().zip(b) {
            let m1 = ai * bi;
            let m2 = (1.0 + ai * ai) * (1.0 + bi * bi);
            let m3 = (ai.powi(3) + 3.0 * ai) * (bi.powi(3) + 3.0 * bi);
            mu += m1;
            var += m2 - m1 * m1;
            k3 += m3 - 3.0 * m2 * m1 + 2.0 * m1.powi(3);
        }
        // Moments of s = S / d.
        let (mu, var, k3) = (mu / d, var / (d * d), k3 / (d * d * d));
        let e_s2 = var + mu * mu;
        let e_s3 = k3 + 3.0 * var * mu + mu.powi(3);
        e_s3 + 3.0 * e_s2 + 3.0 * mu + 1.0
    }

    #[test]
    fn unbiased_on_gaussians_with_a_known_mmd() {
        let (a, b) = ([0.0, 0.5, -0.3, 0.2], [0.4, 0.1, -0.3, 0.6]);
        let exact =
            expected_kernel(&a, &a) + expected_kernel(&b, &b) - 2.0 * expected_kernel(&a, &b);
        let mut rng = Rng::new(11);
        let draws = 400;
        let values: Vec<f64> = (0..draws)
            .map(|_| {
                let x = gaussian(40, &a, &mut rng);
                let y = gaussian(60, &b, &mut rng);
                mmd2_unbiased(&x, &y, 4).unwrap()
            })
            .collect();
        let mean = values.iter().sum::<f64>() / draws as f64;
        let sd =
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (draws - 1) as f64).sqrt();
        let se = sd / (draws as f64).sqrt();
        assert!(exact > 0.05, "the distributions differ: {exact}");
        assert!(
            (mean - exact).abs() < 3.0 * se,
            "mean of {draws} estimates {mean} vs exact {exact} (standard error {se})"
        );
    }

    #[test]
    fn a_set_against_itself_is_near_zero_and_far_sets_are_not() {
        let mut rng = Rng::new(3);
        let d = 16;
        let x = gaussian(600, &vec![0.0; d], &mut rng);
        let same = kid(&x, &x, d, 20, 200, &mut Rng::new(5)).unwrap();
        let y = gaussian(600, &vec![0.5; d], &mut rng);
        let far = kid(&x, &y, d, 20, 200, &mut Rng::new(5)).unwrap();
        // Subsets of one set share vectors, whose own kernel values pull the estimate a little
        // below 0; against a set that differs it is far larger.
        assert!(same.mean.abs() < 0.03 * far.mean, "{same:?} vs {far:?}");
        // Another draw from the same distribution: 0 within the estimate's own spread.
        let twin = gaussian(600, &vec![0.0; d], &mut rng);
        let other = kid(&x, &twin, d, 20, 200, &mut Rng::new(5)).unwrap();
        let se = other.std / (other.subsets as f64).sqrt();
        assert!(other.mean.abs() < 3.0 * se, "{other:?}");
        assert!(far.std > 0.0 && same.subsets == 20 && same.subset_size == 200);
        assert_eq!(
            kid(&x, &y, d, 20, 200, &mut Rng::new(5)).unwrap(),
            far,
            "seeded"
        );
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(matches!(
            mmd2_unbiased(&[1.0, 2.0, 3.0], &[1.0, 2.0], 2),
            Err(KidError::Ragged { .. })
        ));
        assert!(matches!(
            mmd2_unbiased(&[1.0, 2.0], &[1.0, 2.0, 3.0, 4.0], 2),
            Err(KidError::TooFew(1))
        ));
    }
}
