//! Eigenvalues and eigenvectors of a real symmetric matrix by the cyclic Jacobi method: slow in
//! theory (O(n^3) per sweep) but exact to rounding, unconditionally stable, and plenty fast for
//! the 128x128 covariances of Frechet distances.

/// A symmetric matrix's eigen-decomposition: `matrix = vectors * diag(values) * vectors^T`.
#[derive(Debug, Clone, PartialEq)]
pub struct SymmetricEigen {
    /// Eigenvalues, in no particular order.
    pub values: Vec<f64>,
    /// n x n, row-major; column `i` is the unit eigenvector of `values[i]`.
    pub vectors: Vec<f64>,
}

/// Sweeps after which the iteration stops whether or not it met the tolerance (it converges
/// quadratically, in well under 20 sweeps for any matrix met in practice).
const MAX_SWEEPS: usize = 60;

/// Decomposes the symmetric `n` x `n` row-major `matrix` (only its upper triangle is read, as
/// if the lower one mirrored it).
pub fn symmetric_eigen(matrix: &[f64], n: usize) -> SymmetricEigen {
    assert_eq!(
        matrix.len(),
        n * n,
        "symmetric_eigen: not an {n}x{n} matrix"
    );
    let mut a = matrix.to_vec();
    for i in 0..n {
        for j in 0..i {
            a[i * n + j] = a[j * n + i];
        }
    }
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum();
    for _ in 0..MAX_SWEEPS {
        let off: f64 = (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off <= f64::EPSILON * f64::EPSILON * scale || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                rotate(&mut a, &mut v, n, p, q);
            }
        }
    }
    SymmetricEigen {
        values: (0..n).map(|i| a[i * n + i]).collect(),
        vectors: v,
    }
}

/// One Jacobi rotation in the (p, q) plane that zeroes `a[p][q]`: a <- J^T a J, v <- v J.
fn rotate(a: &mut [f64], v: &mut [f64], n: usize, p: usize, q: usize) {
    let apq = a[p * n + q];
    if apq == 0.0 {
        return;
    }
    let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
    // The smaller root of t^2 + 2 theta t - 1 = 0 (rotation angle at most pi/4).
    let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
    let c = 1.0 / (t * t + 1.0).sqrt();
    let s = t * c;
    for k in 0..n {
        let (akp, akq) = (a[k * n + p], a[k * n + q]);
        a[k * n + p] = c * akp - s * akq;
        a[k * n + q] = s * akp + c * akq;
    }
    for k in 0..n {
        let (apk, aqk) = (a[p * n + k], a[q * n + k]);
        a[p * n + k] = c * apk - s * aqk;
        a[q * n + k] = s * apk + c * aqk;
    }
    for k in 0..n {
        let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
        v[k * n + p] = c * vkp - s * vkq;
        v[k * n + q] = s * vkp + c * vkq;
    }
}

/// The principal square root of a symmetric positive semi-definite matrix (eigenvalues below
/// zero, which only rounding makes, count as zero).
pub fn sqrt_psd(matrix: &[f64], n: usize) -> Vec<f64> {
    let e = symmetric_eigen(matrix, n);
    let roots: Vec<f64> = e.values.iter().map(|l| l.max(0.0).sqrt()).collect();
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            out[i * n + j] = (0..n)
                .map(|k| e.vectors[i * n + k] * roots[k] * e.vectors[j * n + k])
                .sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
        let mut out = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                for j in 0..n {
                    out[i * n + j] += a[i * n + k] * b[k * n + j];
                }
            }
        }
        out
    }

    fn random_symmetric(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = Rng::new(seed);
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in i..n {
                let x = rng.normal();
                a[i * n + j] = x;
                a[j * n + i] = x;
            }
        }
        a
    }

    #[test]
    fn two_by_two_by_hand() {
        // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
        let e = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        let mut values = e.values.clone();
        values.sort_by(f64::total_cmp);
        assert!((values[0] - 1.0).abs() < 1e-14 && (values[1] - 3.0).abs() < 1e-14);
    }

    #[test]
    fn reconstructs_random_matrices_with_orthonormal_vectors() {
        for (n, seed) in [(1, 1), (5, 2), (40, 3)] {
            let a = random_symmetric(n, seed);
            let e = symmetric_eigen(&a, n);
            let v = &e.vectors;
            let mut vd = v.clone();
            for i in 0..n {
                for k in 0..n {
                    vd[i * n + k] *= e.values[k];
                }
            }
            let mut vt = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    vt[i * n + j] = v[j * n + i];
                }
            }
            let back = matmul(&vd, &vt, n);
            let vtv = matmul(&vt, v, n);
            for i in 0..n {
                for j in 0..n {
                    assert!((back[i * n + j] - a[i * n + j]).abs() < 1e-10, "n {n}");
                    let id = if i == j { 1.0 } else { 0.0 };
                    assert!((vtv[i * n + j] - id).abs() < 1e-12, "n {n}");
                }
            }
            let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
            assert!((e.values.iter().sum::<f64>() - trace).abs() < 1e-10);
        }
    }

    #[test]
    fn square_root_squares_back() {
        let n = 12;
        let b = random_symmetric(n, 9);
        let psd = matmul(&b, &b, n); // B B = B B^T is positive semi-definite
        let r = sqrt_psd(&psd, n);
        let back = matmul(&r, &r, n);
        for (x, y) in back.iter().zip(&psd) {
            assert!((x - y).abs() < 1e-9, "{x} vs {y}");
        }
        // A rank-deficient matrix (rounding may push its zero eigenvalues below 0) works too.
        let r = sqrt_psd(&[1.0, 1.0, 1.0, 1.0], 2);
        let half = std::f64::consts::FRAC_1_SQRT_2;
        for x in r {
            assert!((x - half).abs() < 1e-12, "{x}");
        }
    }
}
