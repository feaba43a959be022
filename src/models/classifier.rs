//! A small CNN that labels the data set's images. The eval stage judges samples with it: its
//! predicted class (conditional accuracy) and its 128 penultimate features (the space Frechet
//! distances are measured in).
//!
//! conv3x3 32 -> ReLU -> conv3x3 32 -> ReLU -> max-pool 2 -> conv3x3 64 -> ReLU -> conv3x3 64
//! -> ReLU -> max-pool 2 -> flatten -> Linear 128 (the features) -> ReLU -> Linear classes.

use candle_core::{D, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::layers::{Conv2d, Conv2dConfig, Linear};

/// Width of the penultimate feature vector.
pub const FEATURES: usize = 128;

/// Channels of the four convolutions.
const WIDTHS: [usize; 4] = [32, 32, 64, 64];

/// What one forward pass gives.
#[derive(Debug, Clone)]
pub struct ClassifierOutput {
    /// (B, classes) unnormalised log-probabilities.
    pub logits: Tensor,
    /// (B, [`FEATURES`]) penultimate activations (before their ReLU).
    pub features: Tensor,
}

#[derive(Debug, Clone)]
pub struct Classifier {
    convs: Vec<Conv2d>,
    features: Linear,
    head: Linear,
}

impl Classifier {
    /// A classifier of `channels` x `image_size` x `image_size` images into `classes` classes.
    /// The two poolings need `image_size` divisible by 4.
    pub fn new(channels: usize, image_size: usize, classes: usize, vb: VarBuilder) -> Result<Self> {
        if image_size < 4 || !image_size.is_multiple_of(4) {
            candle_core::bail!(
                "the classifier pools twice by 2, so the image size must be a multiple of 4, not {image_size}"
            );
        }
        if classes < 2 {
            candle_core::bail!("a classifier needs at least 2 classes, not {classes}");
        }
        let mut convs = Vec::with_capacity(WIDTHS.len());
        let mut c_in = channels;
        for (i, &w) in WIDTHS.iter().enumerate() {
            convs.push(Conv2d::new(
                c_in,
                w,
                Conv2dConfig::SAME3,
                vb.pp(format!("conv{i}")),
            )?);
            c_in = w;
        }
        let side = image_size / 4;
        let flat = WIDTHS[3] * side * side;
        Ok(Self {
            convs,
            features: Linear::new(flat, FEATURES, true, vb.pp("features"))?,
            head: Linear::new(FEATURES, classes, true, vb.pp("head"))?,
        })
    }

    /// Logits and penultimate features of a (B, C, H, W) batch in [-1, 1].
    pub fn forward(&self, x: &Tensor) -> Result<ClassifierOutput> {
        let mut h = x.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            h = conv.forward(&h)?.relu()?;
            if i % 2 == 1 {
                h = h.max_pool2d(2)?;
            }
        }
        let features = self.features.forward(&h.flatten_from(1)?)?;
        let logits = self.head.forward(&features.relu()?)?;
        Ok(ClassifierOutput { logits, features })
    }
}

/// log softmax over the last dimension, shifted by the (constant) row maximum for stability.
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&log_sum)
}

/// Mean negative log-likelihood of `labels` (B, u32) under (B, classes) `logits`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let picked = log_softmax(logits)?.gather(&labels.unsqueeze(1)?, 1)?;
    picked.mean_all()?.neg()
}

/// The highest-scoring class of each row of (B, classes) `logits`.
pub fn predictions(logits: &Tensor) -> Result<Vec<u32>> {
    logits.argmax(D::Minus1)?.to_vec1::<u32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::ParamStore;
    use crate::rng::Rng;
    use candle_core::{Device, Var};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_vec(Rng::new(seed).normal_vec(n), shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn shapes_and_parameter_count() {
        let store = ParamStore::seeded(0, &Device::Cpu);
        let net = Classifier::new(1, 32, 10, store.vb()).unwrap();
        let out = net.forward(&randn(&[3, 1, 32, 32], 1)).unwrap();
        assert_eq!(out.logits.dims(), &[3, 10]);
        assert_eq!(out.features.dims(), &[3, FEATURES]);
        let convs = (9 + 1) * 32 + (9 * 32 + 1) * 32 + (9 * 32 + 1) * 64 + (9 * 64 + 1) * 64;
        let dense = (64 * 8 * 8 + 1) * 128 + (128 + 1) * 10;
        assert_eq!(store.count(), convs + dense);
        let rgb = ParamStore::seeded(0, &Device::Cpu);
        let net = Classifier::new(3, 28, 4, rgb.vb()).unwrap();
        let out = net.forward(&randn(&[2, 3, 28, 28], 2)).unwrap();
        assert_eq!(out.logits.dims(), &[2, 4]);
    }

    #[test]
    fn refuses_sizes_it_cannot_pool() {
        let store = ParamStore::seeded(0, &Device::Cpu);
        let err = Classifier::new(1, 30, 10, store.vb()).unwrap_err();
        assert!(err.to_string().contains("multiple of 4, not 30"), "{err}");
    }

    #[test]
    fn cross_entropy_matches_the_formula() {
        let logits = Tensor::new(&[[1f32, 2., 3.], [0., 0., 1000.]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 2], &Device::Cpu).unwrap();
        let got = cross_entropy(&logits, &labels)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        // Row 1: -log(e^1 / (e^1 + e^2 + e^3)); row 2 (huge logit, no overflow): ~0.
        let row1 = -(1f64.exp() / (1f64.exp() + 2f64.exp() + 3f64.exp())).ln();
        assert!((f64::from(got) - row1 / 2.0).abs() < 1e-5, "{got}");
        assert_eq!(predictions(&logits).unwrap(), vec![2, 2]);
    }

    #[test]
    fn cross_entropy_gradient_matches_finite_differences() {
        // In f64, so central differences are accurate to ~1e-9.
        let (b, k) = (4, 5);
        let init: Vec<f64> = Rng::new(7)
            .normal_vec(b * k)
            .into_iter()
            .map(|v| f64::from(v) * 3.0)
            .collect();
        let labels = Tensor::new(&[0u32, 3, 4, 3], &Device::Cpu).unwrap();
        let tensor = |v: &[f64]| Tensor::from_vec(v.to_vec(), (b, k), &Device::Cpu).unwrap();
        let loss_at = |v: &[f64]| -> f64 {
            cross_entropy(&tensor(v), &labels)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let var = Var::from_tensor(&tensor(&init)).unwrap();
        let loss = cross_entropy(var.as_tensor(), &labels).unwrap();
        let grad: Vec<f64> = loss
            .backward()
            .unwrap()
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let h = 1e-5;
        for i in 0..b * k {
            let (mut up, mut down) = (init.clone(), init.clone());
            up[i] += h;
            down[i] -= h;
            let numeric = (loss_at(&up) - loss_at(&down)) / (2.0 * h);
            assert!(
                (numeric - grad[i]).abs() < 1e-7,
                "logit {i}: analytic {} numeric {numeric}",
                grad[i]
            );
        }
        // The analytic form: (softmax - one_hot) / B; each row of the gradient sums to 0.
        for row in grad.chunks(k) {
            assert!(row.iter().sum::<f64>().abs() < 1e-12, "{row:?}");
        }
    }
}
