//! The Frechet distance between two feature sets, each summarised as a Gaussian (mean and
//! covariance), as FID computes it (Heusel et al. 2017):
//!
//! d^2 = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).
//!
//! Tr (S1 S2)^(1/2) is taken as the sum of the square roots of the eigenvalues of the symmetric
//! positive semi-definite S1^(1/2) S2 S1^(1/2), which has the same eigenvalues as S1 S2: no
//! complex square roots of a non-symmetric matrix, and no blow-up when S1 is singular.

use thiserror::Error;

use super::eigen::{sqrt_psd, symmetric_eigen};

#[derive(Debug, Error, PartialEq)]
pub enum FrechetError {
    #[error("a covariance needs at least 2 feature vectors, got {0}")]
    TooFew(usize),
    #[error("{values} values do not split into feature vectors of width {dim}")]
    Ragged { values: usize, dim: usize },
    #[error("feature widths differ: {0} and {1}")]
    Widths(usize, usize),
}

/// Mean and covariance of a set of feature vectors, in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    pub dim: usize,
    /// Feature vectors it was fitted to.
    pub count: usize,
    pub mean: Vec<f64>,
    /// dim x dim, row-major; the unbiased estimate (divided by count - 1), as `numpy.cov`.
    pub cov: Vec<f64>,
}

impl Gaussian {
    /// Fits `features`, `dim` values per vector, vectors one after another.
    pub fn fit(features: &[f32], dim: usize) -> Result<Self, FrechetError> {
        if dim == 0 || !features.len().is_multiple_of(dim) {
            return Err(FrechetError::Ragged {
                values: features.len(),
                dim,
            });
        }
        let count = features.len() / dim;
        if count < 2 {
            return Err(FrechetError::TooFew(count));
        }
        let mut mean = vec![0.0; dim];
        for row in features.chunks(dim) {
            for (m, &x) in mean.iter_mut().zip(row) {
                *m += f64::from(x);
            }
        }
        mean.iter_mut().for_each(|m| *m /= count as f64);
        let mut cov = vec![0.0; dim * dim];
        let mut centred = vec![0.0; dim];
        for row in features.chunks(dim) {
            for ((c, &x), m) in centred.iter_mut().zip(row).zip(&mean) {
                *c = f64::from(x) - m;
            }
            for i in 0..dim {
                let ci = centred[i];
                let line = &mut cov[i * dim..(i + 1) * dim];
                for (out, cj) in line[i..].iter_mut().zip(&centred[i..]) {
                    *out += ci * cj;
                }
            }
        }
        let norm = 1.0 / (count - 1) as f64;
        for i in 0..dim {
            for j in i..dim {
                let v = cov[i * dim + j] * norm;
                cov[i * dim + j] = v;
                cov[j * dim + i] = v;
            }
        }
        Ok(Self {
            dim,
            count,
            mean,
            cov,
        })
    }
}

/// Tr (a b)^(1/2) of two symmetric positive semi-definite n x n matrices.
pub fn trace_sqrt_product(a: &[f64], b: &[f64], n: usize) -> f64 {
    let r = sqrt_psd(a, n);
    // m = r b r, symmetric by construction; built as (r b) r.
    let mut rb = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let rik = r[i * n + k];
            for j in 0..n {
                rb[i * n + j] += rik * b[k * n + j];
            }
        }
    }
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            m[i * n + j] = (0..n).map(|k| rb[i * n + k] * r[k * n + j]).sum();
        }
    }
    symmetric_eigen(&m, n)
        .values
        .iter()
        .map(|l| l.max(0.0).sqrt())
        .sum()
}

/// The Frechet distance between the Gaussians `a` and `b` (at least 0: rounding can take the
/// exact value of identical sets a hair below zero).
pub fn distance(a: &Gaussian, b: &Gaussian) -> Result<f64, FrechetError> {
    if a.dim != b.dim {
        return Err(FrechetError::Widths(a.dim, b.dim));
    }
    let n = a.dim;
    let mean_term: f64 = a
        .mean
        .iter()
        .zip(&b.mean)
        .map(|(x, y)| (x - y).powi(2))
        .sum();
    let trace = |m: &[f64]| (0..n).map(|i| m[i * n + i]).sum::<f64>();
    let d = mean_term + trace(&a.cov) + trace(&b.cov) - 2.0 * trace_sqrt_product(&a.cov, &b.cov, n);
    Ok(d.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn gaussian(mean: Vec<f64>, cov: Vec<f64>) -> Gaussian {
        Gaussian {
            dim: mean.len(),
            count: 0,
            mean,
            cov,
        }
    }

    fn diagonal(values: &[f64]) -> Vec<f64> {
        let n = values.len();
        let mut m = vec![0.0; n * n];
        for (i, v) in values.iter().enumerate() {
            m[i * n + i] = *v;
        }
        m
    }

    /// q^T m q for the rotation q by `angle` in the (0, 1) plane.
    fn rotated(m: &[f64], n: usize, angle: f64) -> Vec<f64> {
        let mut q = diagonal(&vec![1.0; n]);
        let (c, s) = (angle.cos(), angle.sin());
        q[0] = c;
        q[1] = -s;
        q[n] = s;
        q[n + 1] = c;
        let mut out = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                out[i * n + j] = (0..n)
                    .flat_map(|k| (0..n).map(move |l| (k, l)))
                    .map(|(k, l)| q[k * n + i] * m[k * n + l] * q[l * n + j])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn fit_gives_numpy_mean_and_unbiased_covariance() {
        // numpy.cov([[1, 2, 3, 6], [2, 4, 6, 4]]) = [[4.6667, 1.3333], [1.3333, 2.6667]]
        let g = Gaussian::fit(&[1.0, 2.0, 2.0, 4.0, 3.0, 6.0, 6.0, 4.0], 2).unwrap();
        assert_eq!(g.count, 4);
        assert_eq!(g.mean, vec![3.0, 4.0]);
        let want = [14.0 / 3.0, 4.0 / 3.0, 4.0 / 3.0, 8.0 / 3.0];
        for (x, y) in g.cov.iter().zip(want) {
            assert!((x - y).abs() < 1e-12, "{:?}", g.cov);
        }
        assert_eq!(Gaussian::fit(&[1.0, 2.0], 2), Err(FrechetError::TooFew(1)));
        assert!(matches!(
            Gaussian::fit(&[1.0, 2.0, 3.0], 2),
            Err(FrechetError::Ragged { .. })
        ));
    }

    #[test]
    fn identical_sets_are_at_distance_zero() {
        let mut rng = Rng::new(3);
        let features = rng.normal_vec(500 * 16);
        let g = Gaussian::fit(&features, 16).unwrap();
        let d = distance(&g, &g).unwrap();
        assert!(d < 1e-9, "{d}");
    }

    #[test]
    fn diagonal_gaussians_match_the_closed_form() {
        // |m1 - m2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2 = (1 + 4 + 0) + (1 + 1 + 0.25) = 7.25
        let a = gaussian(vec![0.0, 0.0, 1.0], diagonal(&[1.0, 4.0, 2.25]));
        let b = gaussian(vec![1.0, 2.0, 1.0], diagonal(&[4.0, 1.0, 1.0]));
        let d = distance(&a, &b).unwrap();
        assert!((d - 7.25).abs() < 1e-12, "{d}");
        // The same pair in rotated coordinates: the distance does not depend on the basis,
        // though the covariances no longer are diagonal.
        let ra = gaussian(a.mean.clone(), rotated(&a.cov, 3, 0.7));
        let rb = gaussian(b.mean.clone(), rotated(&b.cov, 3, 0.7));
        let d = distance(&ra, &rb).unwrap();
        assert!((d - 7.25).abs() < 1e-10, "{d}");
    }

    #[test]
    fn non_commuting_covariances_against_scipy() {
        // scipy.linalg.sqrtm: with S1 = [[2, 1], [1, 2]], S2 = [[1, 0], [0, 3]] and means
        // (0, 0), (1, 1): 2 + 4 + 4 - 2 * trace(sqrtm(S1 @ S2)) = 2.5166852264521147
        // (S1 S2 has eigenvalues 4 +- sqrt(7)).
        let a = gaussian(vec![0.0, 0.0], vec![2.0, 1.0, 1.0, 2.0]);
        let b = gaussian(vec![1.0, 1.0], vec![1.0, 0.0, 0.0, 3.0]);
        let want = 2.516_685_226_452_114_7;
        for d in [distance(&a, &b).unwrap(), distance(&b, &a).unwrap()] {
            assert!((d - want).abs() < 1e-12, "{d}");
        }
    }

    #[test]
    fn symmetric_in_its_arguments_and_refuses_mismatched_widths() {
        let mut rng = Rng::new(5);
        let x = rng.normal_vec(300 * 8);
        let y: Vec<f32> = rng
            .normal_vec(200 * 8)
            .iter()
            .enumerate()
            .map(|(i, v)| v * (1.0 + (i % 8) as f32 * 0.3) + 0.5)
            .collect();
        let (gx, gy) = (Gaussian::fit(&x, 8).unwrap(), Gaussian::fit(&y, 8).unwrap());
        let (dxy, dyx) = (distance(&gx, &gy).unwrap(), distance(&gy, &gx).unwrap());
        assert!(dxy > 1.0, "{dxy}");
        assert!((dxy - dyx).abs() < 1e-9 * dxy, "{dxy} vs {dyx}");
        let g4 = Gaussian::fit(&x, 4).unwrap();
        assert_eq!(distance(&gx, &g4), Err(FrechetError::Widths(8, 4)));
    }

    #[test]
    fn samples_of_known_gaussians_land_near_the_closed_form() {
        // 20000 draws each of N(0, diag(1, 1, 1, 1)) and N(0.5, diag(4, 1, 1, 0.25)): the
        // exact distance is 4 * 0.25 + (1 + 0 + 0 + 0.25) = 2.25.
        let mut rng = Rng::new(11);
        let a = rng.normal_vec(20_000 * 4);
        let scale = [2.0f32, 1.0, 1.0, 0.5];
        let b: Vec<f32> = rng
            .normal_vec(20_000 * 4)
            .iter()
            .enumerate()
            .map(|(i, v)| v * scale[i % 4] + 0.5)
            .collect();
        let d = distance(
            &Gaussian::fit(&a, 4).unwrap(),
            &Gaussian::fit(&b, 4).unwrap(),
        )
        .unwrap();
        assert!((d - 2.25).abs() < 0.05, "{d}");
    }
}
