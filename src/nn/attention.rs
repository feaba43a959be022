//! Multi-head attention over token sequences: self-attention when the context is the input,
//! cross-attention when it is the conditioning.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::kernels;
use super::layers::{Dropout, Linear};
use crate::rng::Rng;

/// Sizes of a [`MultiHeadAttention`].
#[derive(Debug, Clone, Copy)]
pub struct AttentionConfig {
    /// Width of the queries' input and of the output.
    pub dim: usize,
    /// Width of the context that keys and values are read from.
    pub context_dim: usize,
    pub heads: usize,
    /// Bias on the q/k/v projections (the UNet's have none; the text encoder's do).
    pub qkv_bias: bool,
    pub dropout: f64,
}

/// softmax(q k^T / sqrt(d_head)) v per head, then an output projection.
#[derive(Debug, Clone)]
pub struct MultiHeadAttention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    dropout: Dropout,
}

impl MultiHeadAttention {
    pub fn new(cfg: AttentionConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            to_q: Linear::new(cfg.dim, cfg.dim, cfg.qkv_bias, vb.pp("to_q"))?,
            to_k: Linear::new(cfg.context_dim, cfg.dim, cfg.qkv_bias, vb.pp("to_k"))?,
            to_v: Linear::new(cfg.context_dim, cfg.dim, cfg.qkv_bias, vb.pp("to_v"))?,
            to_out: Linear::new(cfg.dim, cfg.dim, true, vb.pp("to_out"))?,
            heads: cfg.heads,
            dropout: Dropout { p: cfg.dropout },
        })
    }

    /// (B, T, H*d) -> (B*H, T, d)
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, width) = x.dims3()?;
        let d = width / self.heads;
        x.reshape((b, t, self.heads, d))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * self.heads, t, d))
    }

    /// x (B, T, dim), context (B, S, context_dim) -> (B, T, dim)
    pub fn forward(&self, x: &Tensor, context: &Tensor, rng: Option<&mut Rng>) -> Result<Tensor> {
        let (b, t, width) = x.dims3()?;
        let q = self.split_heads(&self.to_q.forward(x)?)?;
        let k = self.split_heads(&self.to_k.forward(context)?)?;
        let v = self.split_heads(&self.to_v.forward(context)?)?;
        let d = width / self.heads;
        let h = kernels::attention(&q, &k, &v, 1.0 / (d as f64).sqrt())?; // (B*H, T, d)
        let h = h
            .reshape((b, self.heads, t, d))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, width))?;
        self.dropout.forward(&self.to_out.forward(&h)?, rng)
    }
}
