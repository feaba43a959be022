//! The UNet's blocks (Ho et al. 2020 residual blocks with scale-shift time conditioning; the
//! spatial transformer of Rombach et al. 2022 with cross-attention on the prompt context).

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::attention::{AttentionConfig, MultiHeadAttention};
use crate::nn::kernels;
use crate::nn::layers::{Conv2d, Conv2dConfig, ConvInit, Dropout, GroupNorm, LayerNorm, Linear};
use crate::rng::Rng;

/// Sinusoidal embedding of per-sample timesteps t (B) into `dim` features:
/// [sin(t f_i), cos(t f_i)] with f_i = exp(-ln(10000) i / (dim/2 - 1)).
pub fn timestep_embedding(t: &Tensor, dim: usize) -> Result<Tensor> {
    let half = dim / 2;
    let denom = (half.max(2) - 1) as f64;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (-(10_000f64.ln()) * i as f64 / denom).exp() as f32)
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
    let args = t
        .to_dtype(DType::F32)?
        .unsqueeze(1)?
        .broadcast_mul(&freqs)?; // (B, half)
    Tensor::cat(&[args.sin()?, args.cos()?], 1)
}

/// GN -> SiLU -> conv3x3; GN(h) * (1 + scale) + shift from the time embedding -> SiLU ->
/// dropout -> conv3x3; plus the input (through a channel Linear when the width changes).
#[derive(Debug, Clone)]
pub struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_proj: Linear,
    norm2: GroupNorm,
    dropout: Dropout,
    conv2: Conv2d,
    skip: Option<Tensor>,
    skip_bias: Option<Tensor>,
    same: bool,
}

/// Sizes of a [`ResBlock`].
#[derive(Debug, Clone, Copy)]
pub struct ResBlockConfig {
    pub c_in: usize,
    pub c_out: usize,
    pub time_dim: usize,
    pub groups: usize,
    pub dropout: f64,
    /// Build the skip projection even when the width does not change (the lesson does).
    pub always_skip: bool,
}

impl ResBlock {
    pub fn new(cfg: ResBlockConfig, vb: VarBuilder) -> Result<Self> {
        let (c_in, c_out) = (cfg.c_in, cfg.c_out);
        let same = c_in == c_out;
        let (skip, skip_bias) = if same && !cfg.always_skip {
            (None, None)
        } else {
            let lin = vb.pp("skip");
            let bound = 1.0 / (c_in as f64).sqrt();
            let init = candle_nn::Init::Uniform {
                lo: -bound,
                up: bound,
            };
            (
                Some(lin.get_with_hints((c_out, c_in), "weight", init)?),
                Some(lin.get_with_hints(c_out, "bias", init)?),
            )
        };
        Ok(Self {
            norm1: GroupNorm::new(cfg.groups, c_in, 1e-5, vb.pp("norm1"))?,
            conv1: Conv2d::new(c_in, c_out, Conv2dConfig::SAME3, vb.pp("conv1"))?,
            time_proj: Linear::new(cfg.time_dim, 2 * c_out, true, vb.pp("time_proj"))?,
            norm2: GroupNorm::new(cfg.groups, c_out, 1e-5, vb.pp("norm2"))?,
            dropout: Dropout { p: cfg.dropout },
            conv2: Conv2d::new(c_out, c_out, Conv2dConfig::SAME3, vb.pp("conv2"))?,
            skip,
            skip_bias,
            same,
        })
    }

    /// x (B, C_in, H, W), time embedding (B, T) -> (B, C_out, H, W)
    pub fn forward(&self, x: &Tensor, temb: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        let h = self.conv1.forward(&self.norm1.forward_silu(x)?)?;
        let c_out = h.dim(1)?;
        let ss = self
            .time_proj
            .forward(&temb.silu()?)?
            .unsqueeze(2)?
            .unsqueeze(3)?; // (B, 2C, 1, 1)
        let (scale, shift) = (ss.narrow(1, 0, c_out)?, ss.narrow(1, c_out, c_out)?);
        let h = self
            .norm2
            .forward(&h)?
            .broadcast_mul(&(scale + 1.0)?)?
            .broadcast_add(&shift)?;
        let h = self.dropout.forward(&h.silu()?, rng)?;
        let h = self.conv2.forward(&h)?;
        match (&self.skip, &self.skip_bias, self.same) {
            (Some(w), b, false) => {
                let (co, ci) = w.dims2()?;
                let w = w.reshape((co, ci, 1, 1))?;
                crate::nn::kernels::conv2d(x, &w, b.as_ref(), 1, 0)? + h
            }
            _ => x + h,
        }
    }
}

/// GroupNorm, 1x1 in, [self-attention, cross-attention, GEGLU feed-forward] on the pixels as
/// tokens, 1x1 out (zero-initialised, so the block starts as the identity), residual.
#[derive(Debug, Clone)]
pub struct SpatialTransformer {
    norm: GroupNorm,
    proj_in: Conv2d,
    norm1: LayerNorm,
    attn1: MultiHeadAttention,
    /// LayerNorm and cross-attention, absent for unconditional models.
    cross: Option<(LayerNorm, MultiHeadAttention)>,
    norm3: LayerNorm,
    ff_in: Linear,
    ff_dropout: Dropout,
    ff_out: Linear,
    proj_out: Conv2d,
}

/// Sizes of a [`SpatialTransformer`].
#[derive(Debug, Clone, Copy)]
pub struct TransformerConfig {
    pub channels: usize,
    pub heads: usize,
    pub head_channels: usize,
    /// Width of the conditioning context; `None` builds no cross-attention (unconditional).
    pub context_dim: Option<usize>,
    pub groups: usize,
    pub dropout: f64,
}

impl SpatialTransformer {
    pub fn new(cfg: TransformerConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.heads * cfg.head_channels;
        let attn = |context_dim: usize, vb: VarBuilder| {
            let a = AttentionConfig {
                dim: d,
                context_dim,
                heads: cfg.heads,
                qkv_bias: false,
                dropout: cfg.dropout,
            };
            MultiHeadAttention::new(a, vb)
        };
        let zero = Conv2dConfig {
            init: ConvInit::Zero,
            ..Conv2dConfig::POINT
        };
        Ok(Self {
            norm: GroupNorm::new(cfg.groups, cfg.channels, 1e-6, vb.pp("norm"))?,
            proj_in: Conv2d::new(cfg.channels, d, Conv2dConfig::POINT, vb.pp("proj_in"))?,
            norm1: LayerNorm::new(d, vb.pp("norm1"))?,
            attn1: attn(d, vb.pp("attn1"))?,
            cross: match cfg.context_dim {
                Some(c) => Some((LayerNorm::new(d, vb.pp("norm2"))?, attn(c, vb.pp("attn2"))?)),
                None => None,
            },
            norm3: LayerNorm::new(d, vb.pp("norm3"))?,
            ff_in: Linear::new(d, 8 * d, true, vb.pp("ff_in"))?,
            ff_dropout: Dropout { p: cfg.dropout },
            ff_out: Linear::new(4 * d, d, true, vb.pp("ff_out"))?,
            proj_out: Conv2d::new(d, cfg.channels, zero, vb.pp("proj_out"))?,
        })
    }

    /// x (B, C, H, W), context (B, S, context_dim) -> (B, C, H, W)
    pub fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        mut rng: Option<&mut Rng>,
    ) -> Result<Tensor> {
        let (b, _, hh, ww) = x.dims4()?;
        let h = self.proj_in.forward(&self.norm.forward(x)?)?;
        let d = h.dim(1)?;
        let mut h = h.reshape((b, d, hh * ww))?.transpose(1, 2)?.contiguous()?; // (B, HW, d)
        let n1 = self.norm1.forward(&h)?;
        h = (&h + self.attn1.forward(&n1, &n1, rng.as_deref_mut())?)?;
        if let (Some((norm2, attn2)), Some(ctx)) = (&self.cross, context) {
            h = (&h + attn2.forward(&norm2.forward(&h)?, ctx, rng.as_deref_mut())?)?;
        }
        let f = self.ff_in.forward(&self.norm3.forward(&h)?)?; // (B, HW, 8d)
        let f = self.ff_dropout.forward(&kernels::geglu(&f)?, rng)?; // u · GELU(gate)
        h = (&h + self.ff_out.forward(&f)?)?;
        let h = h.transpose(1, 2)?.contiguous()?.reshape((b, d, hh, ww))?;
        x + self.proj_out.forward(&h)?
    }
}
