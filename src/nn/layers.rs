//! The basic layers (convolution, linear, normalisations, dropout), initialised as PyTorch does
//! by default and computed through [`super::kernels`].

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::kernels;
use crate::rng::Rng;

/// PyTorch's default for conv and linear layers: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
fn fan_in_uniform(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A square-kernel 2-D convolution.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

/// Shape and options of a [`Conv2d`].
#[derive(Debug, Clone, Copy)]
pub struct Conv2dConfig {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub bias: bool,
    pub init: ConvInit,
}

/// How a convolution's parameters start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ConvInit {
    /// PyTorch's default: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    Default,
    /// All zeros (the "zero module" output projections of the UNet).
    Zero,
    /// Weight N(0, std), bias as the default (pix2pix's discriminator).
    Normal(f64),
}

impl Conv2dConfig {
    /// 3x3, stride 1, padding 1, with bias.
    pub const SAME3: Self = Self {
        kernel: 3,
        stride: 1,
        padding: 1,
        bias: true,
        init: ConvInit::Default,
    };
    /// 1x1 with bias.
    pub const POINT: Self = Self {
        kernel: 1,
        stride: 1,
        padding: 0,
        bias: true,
        init: ConvInit::Default,
    };
}

impl Conv2d {
    pub fn new(c_in: usize, c_out: usize, cfg: Conv2dConfig, vb: VarBuilder) -> Result<Self> {
        let k = cfg.kernel;
        let default = fan_in_uniform(c_in * k * k);
        let (w_init, b_init) = match cfg.init {
            ConvInit::Default => (default, default),
            ConvInit::Zero => (Init::Const(0.), Init::Const(0.)),
            ConvInit::Normal(stdev) => (Init::Randn { mean: 0.0, stdev }, default),
        };
        let weight = vb.get_with_hints((c_out, c_in, k, k), "weight", w_init)?;
        let bias = if cfg.bias {
            Some(vb.get_with_hints(c_out, "bias", b_init)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            stride: cfg.stride,
            padding: cfg.padding,
        })
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// (B, C_in, H, W) -> (B, C_out, H', W')
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::conv2d(
            x,
            &self.weight,
            self.bias.as_ref(),
            self.stride,
            self.padding,
        )
    }
}

/// y = x W^T + b over the last dimension.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(d_in: usize, d_out: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let init = fan_in_uniform(d_in);
        let weight = vb.get_with_hints((d_out, d_in), "weight", init)?;
        let bias = if bias {
            Some(vb.get_with_hints(d_out, "bias", init)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// The weight, (d_out, d_in).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, (d_out), if the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// (..., d_in) -> (..., d_out)
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::linear(x, &self.weight, self.bias.as_ref())
    }
}

/// GroupNorm with a per-channel affine, optionally fused with the SiLU that follows it.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    gamma: Tensor,
    beta: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new(groups: usize, channels: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let gamma = vb.get_with_hints(channels, "weight", Init::Const(1.))?;
        let beta = vb.get_with_hints(channels, "bias", Init::Const(0.))?;
        Ok(Self {
            gamma,
            beta,
            groups,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::group_norm(x, &self.gamma, &self.beta, self.groups, self.eps, false)
    }

    /// silu(norm(x)), in one pass where the kernels allow.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        kernels::group_norm(x, &self.gamma, &self.beta, self.groups, self.eps, true)
    }
}

/// LayerNorm over the last dimension.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let gamma = vb.get_with_hints(dim, "weight", Init::Const(1.))?;
        let beta = vb.get_with_hints(dim, "bias", Init::Const(0.))?;
        Ok(Self {
            gamma,
            beta,
            eps: 1e-5,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        kernels::layer_norm(x, &self.gamma, &self.beta, self.eps)
    }
}

/// Inverted dropout whose mask comes from a seeded stream, so runs repeat exactly.
#[derive(Debug, Clone, Copy)]
pub struct Dropout {
    pub p: f64,
}

impl Dropout {
    /// In training (`rng` given) zeroes each element with probability p and scales the rest
    /// by 1/(1-p); in evaluation (`None`) returns x.
    pub fn forward(&self, x: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        let Some(rng) = rng else { return Ok(x.clone()) };
        if self.p <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        let scale = (1.0 / keep) as f32;
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| if rng.uniform() < keep { scale } else { 0.0 })
            .collect();
        x.mul(&Tensor::from_vec(mask, x.shape(), x.device())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::ParamStore;
    use candle_core::Device;

    #[test]
    fn linear_maps_the_last_dimension() {
        let store = ParamStore::seeded(0, &Device::Cpu);
        let lin = Linear::new(3, 5, true, store.vb().pp("l")).unwrap();
        let x = Tensor::ones((2, 4, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert_eq!(lin.forward(&x).unwrap().dims(), &[2, 4, 5]);
        assert_eq!(store.count(), 3 * 5 + 5);
    }

    #[test]
    fn layer_norm_normalises() {
        let store = ParamStore::seeded(0, &Device::Cpu);
        let ln = LayerNorm::new(4, store.vb()).unwrap();
        let x = Tensor::new(&[[1f32, 2., 3., 4.]], &Device::Cpu).unwrap();
        let y: Vec<f32> = ln
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mean: f32 = y.iter().sum::<f32>() / 4.0;
        let var: f32 = y.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-4, "{y:?}");
    }

    #[test]
    fn dropout_keeps_the_expectation() {
        let x = Tensor::ones(10_000, candle_core::DType::F32, &Device::Cpu).unwrap();
        let mut rng = Rng::new(0);
        let y: Vec<f32> = Dropout { p: 0.25 }
            .forward(&x, Some(&mut rng))
            .unwrap()
            .to_vec1()
            .unwrap();
        let zeros = y.iter().filter(|v| **v == 0.0).count();
        assert!((2_300..2_700).contains(&zeros), "{zeros}");
        let mean: f32 = y.iter().sum::<f32>() / y.len() as f32;
        assert!((mean - 1.0).abs() < 0.03, "{mean}");
        let same = Dropout { p: 0.25 }.forward(&x, None).unwrap();
        assert_eq!(same.to_vec1::<f32>().unwrap(), vec![1.0; 10_000]);
    }
}
