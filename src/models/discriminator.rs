//! The PatchGAN discriminator of pix2pix (Isola et al. 2017) that the latent diffusion paper's
//! autoencoder loss uses, with its hinge loss and the adaptive weight of Esser et al. 2021.

use candle_core::backprop::GradStore;
use candle_core::{D, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::nn::layers::{Conv2d, Conv2dConfig, ConvInit};

/// BatchNorm over (B, H, W) with batch statistics (the discriminator only ever trains).
#[derive(Debug, Clone)]
struct BatchNorm {
    gamma: Tensor,
    beta: Tensor,
}

impl BatchNorm {
    fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gamma: vb.get_with_hints(
                c,
                "weight",
                Init::Randn {
                    mean: 1.0,
                    stdev: 0.02,
                },
            )?,
            beta: vb.get_with_hints(c, "bias", Init::Const(0.0))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let c = x.dim(1)?;
        let xc = x.transpose(0, 1)?.contiguous()?.reshape((c, ()))?; // (C, B*H*W)
        let mean = xc.mean_keepdim(D::Minus1)?;
        let centered = xc.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + 1e-5)?.sqrt()?)?;
        let shape = x.transpose(0, 1)?.dims().to_vec();
        normed
            .reshape(shape)?
            .transpose(0, 1)?
            .broadcast_mul(&self.gamma.reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.beta.reshape((1, c, 1, 1))?)
    }
}

/// conv4x4 s2 (64) -> LReLU; conv s2 (128), BN, LReLU; conv s2 (256), BN, LReLU;
/// conv s1 (512), BN, LReLU; conv s1 (1): a map of real/fake logits over patches.
#[derive(Debug, Clone)]
pub struct Discriminator {
    convs: Vec<Conv2d>,
    norms: Vec<Option<BatchNorm>>,
}

impl Discriminator {
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let widths = [channels, 64, 128, 256, 512, 1];
        let mut convs = Vec::new();
        let mut norms = Vec::new();
        for i in 0..5 {
            let stride = if i < 3 { 2 } else { 1 };
            let bias = i == 0 || i == 4;
            let cfg = Conv2dConfig {
                kernel: 4,
                stride,
                padding: 1,
                bias,
                init: ConvInit::Normal(0.02),
            };
            let vb_i = vb.pp(format!("main.{i}"));
            convs.push(Conv2d::new(widths[i], widths[i + 1], cfg, vb_i.pp("conv"))?);
            norms.push(if (1..4).contains(&i) {
                Some(BatchNorm::new(widths[i + 1], vb_i.pp("norm"))?)
            } else {
                None
            });
        }
        Ok(Self { convs, norms })
    }

    /// Images (B, C, H, W) -> patch logits (B, 1, h, w).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        let last = self.convs.len() - 1;
        for (i, (conv, norm)) in self.convs.iter().zip(&self.norms).enumerate() {
            h = conv.forward(&h)?;
            if let Some(n) = norm {
                h = n.forward(&h)?;
            }
            if i != last {
                h = leaky_relu(&h, 0.2)?;
            }
        }
        Ok(h)
    }
}

fn leaky_relu(x: &Tensor, slope: f64) -> Result<Tensor> {
    x.relu()? - (x.neg()?.relu()? * slope)?
}

/// Hinge loss of the discriminator: (mean relu(1 - D(x)) + mean relu(1 + D(x_hat))) / 2.
pub fn hinge_loss(real: &Tensor, fake: &Tensor) -> Result<Tensor> {
    let r = (1.0 - real)?.relu()?.mean_all()?;
    let f = (fake + 1.0)?.relu()?.mean_all()?;
    (r + f)? * 0.5
}

/// ||grad_W nll|| / (||grad_W g|| + 1e-4), clamped to [0, 1e4], at the decoder's last weight W.
pub fn adaptive_weight(nll_grads: &GradStore, g_grads: &GradStore, last: &Tensor) -> Result<f64> {
    let norm = |g: Option<&Tensor>| -> Result<f64> {
        match g {
            Some(g) => Ok(f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?).sqrt()),
            None => Ok(0.0),
        }
    };
    let w = norm(nll_grads.get(last))? / (norm(g_grads.get(last))? + 1e-4);
    Ok(w.clamp(0.0, 1e4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::ParamStore;
    use candle_core::{DType, Device};

    #[test]
    fn patchgan_has_the_papers_size_and_output_grid() {
        let store = ParamStore::seeded(0, &Device::Cpu);
        let d = Discriminator::new(1, store.vb()).unwrap();
        assert_eq!(store.count(), 2_763_585);
        let x = Tensor::zeros((2, 1, 32, 32), DType::F32, &Device::Cpu).unwrap();
        assert_eq!(d.forward(&x).unwrap().dims(), &[2, 1, 2, 2]);
    }

    #[test]
    fn hinge_loss_values() {
        let dev = Device::Cpu;
        let real = Tensor::new(&[2f32, 0.0], &dev).unwrap();
        let fake = Tensor::new(&[-2f32, 0.5], &dev).unwrap();
        // real: relu(1-2)=0, relu(1-0)=1 -> 0.5; fake: relu(-1)=0, relu(1.5)=1.5 -> 0.75
        let l: f32 = hinge_loss(&real, &fake).unwrap().to_scalar().unwrap();
        assert!((l - 0.625).abs() < 1e-6);
    }
}
