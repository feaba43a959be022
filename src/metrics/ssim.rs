//! Structural similarity (Wang et al. 2004) with the paper's settings: an 11x11 Gaussian window
//! of sigma 1.5, K1 = 0.01, K2 = 0.03, images mapped from [-1, 1] to [0, 1] (data range 1).
//! The SSIM map is taken where the whole window lies inside the image and averaged; channels
//! are measured apart and averaged. This is scikit-image's `structural_similarity(x, y,
//! data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`.

use candle_core::Tensor;
use thiserror::Error;

/// Side of the Gaussian window.
pub const WINDOW: usize = 11;
const SIGMA: f64 = 1.5;
const C1: f64 = 0.01 * 0.01;
const C2: f64 = 0.03 * 0.03;

#[derive(Debug, Error)]
pub enum SsimError {
    #[error("SSIM needs images of at least {WINDOW}x{WINDOW} pixels, not {0}x{1}")]
    TooSmall(usize, usize),
    #[error("the images differ in shape: {0:?} and {1:?}")]
    Shapes(Vec<usize>, Vec<usize>),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
}

/// The normalised 1-D Gaussian of the window.
fn kernel() -> [f64; WINDOW] {
    let r = (WINDOW / 2) as f64;
    let mut k = [0.0; WINDOW];
    for (i, v) in k.iter_mut().enumerate() {
        let d = i as f64 - r;
        *v = (-d * d / (2.0 * SIGMA * SIGMA)).exp();
    }
    let sum: f64 = k.iter().sum();
    k.map(|v| v / sum)
}

/// The Gaussian-weighted local mean of `plane` (h x w) where the window fits:
/// (h - 10) x (w - 10) values.
fn filter_valid(plane: &[f64], h: usize, w: usize, k: &[f64; WINDOW]) -> Vec<f64> {
    let (oh, ow) = (h + 1 - WINDOW, w + 1 - WINDOW);
    let mut rows = vec![0.0; h * ow];
    for y in 0..h {
        for x in 0..ow {
            rows[y * ow + x] = (0..WINDOW).map(|i| k[i] * plane[y * w + x + i]).sum();
        }
    }
    let mut out = vec![0.0; oh * ow];
    for y in 0..oh {
        for x in 0..ow {
            out[y * ow + x] = (0..WINDOW).map(|i| k[i] * rows[(y + i) * ow + x]).sum();
        }
    }
    out
}

/// Mean SSIM of two h x w planes already in [0, 1].
fn plane_ssim(a: &[f64], b: &[f64], h: usize, w: usize) -> f64 {
    let k = kernel();
    let product =
        |p: &[f64], q: &[f64]| -> Vec<f64> { p.iter().zip(q).map(|(x, y)| x * y).collect() };
    let mu_a = filter_valid(a, h, w, &k);
    let mu_b = filter_valid(b, h, w, &k);
    let aa = filter_valid(&product(a, a), h, w, &k);
    let bb = filter_valid(&product(b, b), h, w, &k);
    let ab = filter_valid(&product(a, b), h, w, &k);
    let n = mu_a.len();
    let total: f64 = (0..n)
        .map(|i| {
            let (ma, mb) = (mu_a[i], mu_b[i]);
            let var_a = aa[i] - ma * ma;
            let var_b = bb[i] - mb * mb;
            let cov = ab[i] - ma * mb;
            ((2.0 * ma * mb + C1) * (2.0 * cov + C2))
                / ((ma * ma + mb * mb + C1) * (var_a + var_b + C2))
        })
        .sum();
    total / n as f64
}

/// SSIM of two C x H x W images with values in [-1, 1] (`y` is clamped to that range first),
/// averaged over channels.
pub fn ssim(x: &[f32], y: &[f32], channels: usize, h: usize, w: usize) -> Result<f64, SsimError> {
    if h < WINDOW || w < WINDOW {
        return Err(SsimError::TooSmall(h, w));
    }
    let plane = h * w;
    if x.len() != channels * plane || y.len() != channels * plane {
        return Err(SsimError::Shapes(vec![x.len()], vec![y.len()]));
    }
    let to01 = |v: &[f32]| -> Vec<f64> {
        v.iter()
            .map(|&p| (f64::from(p.clamp(-1.0, 1.0)) + 1.0) * 0.5)
            .collect()
    };
    let total: f64 = (0..channels)
        .map(|c| {
            let r = c * plane..(c + 1) * plane;
            plane_ssim(&to01(&x[r.clone()]), &to01(&y[r]), h, w)
        })
        .sum();
    Ok(total / channels as f64)
}

/// Sum over a (B, C, H, W) batch of each image pair's SSIM.
pub fn batch_sum(x: &Tensor, y: &Tensor) -> Result<f64, SsimError> {
    if x.dims() != y.dims() {
        return Err(SsimError::Shapes(x.dims().to_vec(), y.dims().to_vec()));
    }
    let (b, c, h, w) = x.dims4()?;
    let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let ys: Vec<f32> = y.flatten_all()?.to_vec1()?;
    let len = c * h * w;
    (0..b)
        .map(|i| {
            ssim(
                &xs[i * len..(i + 1) * len],
                &ys[i * len..(i + 1) * len],
                c,
                h,
                w,
            )
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::Device;

    /// The test pattern shared with the scikit-image reference computation (see
    /// `matches_scikit_image`): values in [-1, 1].
    fn pattern(c: usize, h: usize, w: usize, phase: f64) -> Vec<f32> {
        let mut out = Vec::with_capacity(c * h * w);
        for ch in 0..c {
            for i in 0..h {
                for j in 0..w {
                    let (i, j, ch) = (i as f64, j as f64, ch as f64);
                    let v = (0.7 * i + phase).sin() * (0.3 * j + ch).cos();
                    out.push(v as f32);
                }
            }
        }
        out
    }

    #[test]
    fn identical_images_score_one() {
        let x = pattern(1, 32, 32, 0.0);
        assert!((ssim(&x, &x, 1, 32, 32).unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn constant_images_by_hand() {
        // No variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) with a = 0.5, b = 0.6 in [0, 1].
        let a = vec![0.0f32; 16 * 16];
        let b = vec![0.2f32; 16 * 16];
        let want = (2.0 * 0.5 * 0.6 + C1) / (0.25 + 0.36 + C1);
        let got = ssim(&a, &b, 1, 16, 16).unwrap();
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }

    #[test]
    fn a_shift_and_noise_lower_it() {
        let x = pattern(1, 32, 32, 0.0);
        let shifted: Vec<f32> = x.iter().map(|v| v * 0.8 + 0.1).collect();
        let mut rng = Rng::new(1);
        let noisy: Vec<f32> = x.iter().map(|v| v + 0.3 * rng.normal() as f32).collect();
        let s_shift = ssim(&x, &shifted, 1, 32, 32).unwrap();
        let s_noise = ssim(&x, &noisy, 1, 32, 32).unwrap();
        assert!(s_shift < 1.0 && s_shift > 0.9, "{s_shift}");
        assert!(s_noise < 0.8, "{s_noise}");
        // Symmetric in its arguments.
        let back = ssim(&noisy, &x, 1, 32, 32).unwrap();
        assert!((s_noise - back).abs() < 1e-12);
    }

    #[test]
    fn matches_scikit_image() {
        // skimage.metrics.structural_similarity(x01, y01, data_range=1.0, gaussian_weights=True,
        // sigma=1.5, use_sample_covariance=False[, channel_axis=0]) on these patterns mapped to
        // [0, 1], computed with scikit-image 0.26.0.
        let x = pattern(1, 32, 32, 0.0);
        let y = pattern(1, 32, 32, 0.4);
        let got = ssim(&x, &y, 1, 32, 32).unwrap();
        assert!((got - SKIMAGE_GREY).abs() < 1e-9, "{got}");
        let x = pattern(3, 16, 20, 0.0);
        let y: Vec<f32> = pattern(3, 16, 20, 0.4).iter().map(|v| v * 0.5).collect();
        let got = ssim(&x, &y, 3, 16, 20).unwrap();
        assert!((got - SKIMAGE_RGB).abs() < 1e-9, "{got}");
    }

    const SKIMAGE_GREY: f64 = 0.912_664_358_184_893_8;
    const SKIMAGE_RGB: f64 = 0.728_476_866_835_313_4;

    #[test]
    fn batches_and_refusals() {
        let dev = Device::Cpu;
        let x = Tensor::from_vec(pattern(1, 12, 12, 0.0), (1, 1, 12, 12), &dev).unwrap();
        let y = Tensor::from_vec(pattern(1, 12, 12, 0.4), (1, 1, 12, 12), &dev).unwrap();
        let xx = Tensor::cat(&[&x, &x], 0).unwrap();
        let xy = Tensor::cat(&[&x, &y], 0).unwrap();
        let pair = ssim(
            &pattern(1, 12, 12, 0.0),
            &pattern(1, 12, 12, 0.4),
            1,
            12,
            12,
        )
        .unwrap();
        let sum = batch_sum(&xx, &xy).unwrap();
        assert!((sum - (1.0 + pair)).abs() < 1e-12, "{sum}");
        let small = Tensor::zeros((1, 1, 10, 10), candle_core::DType::F32, &dev).unwrap();
        let err = batch_sum(&small, &small).unwrap_err().to_string();
        assert!(err.contains("at least 11x11"), "{err}");
        assert!(batch_sum(&x, &xx).is_err());
    }
}
