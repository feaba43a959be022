//! The autoencoder's building blocks (Rombach et al. 2022, "High-Resolution Image Synthesis with
//! Latent Diffusion Models", after the VQGAN/DDPM encoders): residual blocks, single-head
//! attention over pixels, and the resolution changes.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::kernels;
use crate::nn::layers::{Conv2d, Conv2dConfig, ConvInit, Dropout, GroupNorm};
use crate::rng::Rng;

/// GroupNorm epsilon of the autoencoder.
const EPS: f64 = 1e-6;

/// GN -> SiLU -> conv3x3 -> GN -> SiLU -> dropout -> conv3x3, plus a 1x1 shortcut when the
/// width changes.
#[derive(Debug, Clone)]
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    dropout: Dropout,
    conv2: Conv2d,
    nin_shortcut: Option<Conv2d>,
}

impl ResnetBlock {
    pub fn new(
        c_in: usize,
        c_out: usize,
        groups: usize,
        dropout: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(groups, c_in, EPS, vb.pp("norm1"))?,
            conv1: Conv2d::new(c_in, c_out, Conv2dConfig::SAME3, vb.pp("conv1"))?,
            norm2: GroupNorm::new(groups, c_out, EPS, vb.pp("norm2"))?,
            dropout: Dropout { p: dropout },
            conv2: Conv2d::new(c_out, c_out, Conv2dConfig::SAME3, vb.pp("conv2"))?,
            nin_shortcut: if c_in == c_out {
                None
            } else {
                Some(Conv2d::new(
                    c_in,
                    c_out,
                    Conv2dConfig::POINT,
                    vb.pp("nin_shortcut"),
                )?)
            },
        })
    }

    pub fn forward(&self, x: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let h = self.dropout.forward(&self.norm2.forward_silu(&h)?, rng)?;
        let h = self.conv2.forward(&h)?;
        match &self.nin_shortcut {
            Some(skip) => skip.forward(x)? + h,
            None => x + h,
        }
    }
}

/// Single-head self-attention over the H*W pixels, all C channels wide, with a residual.
#[derive(Debug, Clone)]
pub struct AttnBlock {
    norm: GroupNorm,
    q: Conv2d,
    k: Conv2d,
    v: Conv2d,
    proj_out: Conv2d,
}

impl AttnBlock {
    pub fn new(c: usize, groups: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::new(groups, c, EPS, vb.pp("norm"))?,
            q: Conv2d::new(c, c, Conv2dConfig::POINT, vb.pp("q"))?,
            k: Conv2d::new(c, c, Conv2dConfig::POINT, vb.pp("k"))?,
            v: Conv2d::new(c, c, Conv2dConfig::POINT, vb.pp("v"))?,
            proj_out: Conv2d::new(c, c, Conv2dConfig::POINT, vb.pp("proj_out"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let hn = self.norm.forward(x)?;
        let tokens = |t: Tensor| t.reshape((b, c, h * w))?.transpose(1, 2)?.contiguous(); // (B, HW, C)
        let q = tokens(self.q.forward(&hn)?)?;
        let k = tokens(self.k.forward(&hn)?)?;
        let v = tokens(self.v.forward(&hn)?)?;
        let a = kernels::attention(&q, &k, &v, 1.0 / (c as f64).sqrt())?; // (B, HW, C)
        let a = a.transpose(1, 2)?.contiguous()?.reshape((b, c, h, w))?;
        x + self.proj_out.forward(&a)?
    }
}

/// Halves the resolution: pad right and bottom by one, then a stride-2 3x3 convolution.
#[derive(Debug, Clone)]
pub struct Downsample {
    conv: Conv2d,
}

impl Downsample {
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig {
            kernel: 3,
            stride: 2,
            padding: 0,
            bias: true,
            init: ConvInit::Default,
        };
        Ok(Self {
            conv: Conv2d::new(c, c, cfg, vb.pp("conv"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
        self.conv.forward(&x)
    }
}

/// Doubles the resolution: nearest-neighbour 2x, then a 3x3 convolution.
#[derive(Debug, Clone)]
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(c, c, Conv2dConfig::SAME3, vb.pp("conv"))?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.conv.forward(&kernels::upsample_nearest2x(x)?)
    }
}
