//! A small transformer text encoder trained jointly with the UNet, as in the latent diffusion
//! paper's text-to-image models: token + learned position embeddings, pre-LayerNorm blocks of
//! multi-head self-attention and a GELU MLP, and a final LayerNorm.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::nn::attention::{AttentionConfig, MultiHeadAttention};
use crate::nn::kernels;
use crate::nn::layers::{LayerNorm, Linear};

/// Sizes of a [`TextEncoder`].
#[derive(Debug, Clone, Copy)]
pub struct TextEncoderConfig {
    pub vocab: usize,
    pub max_tokens: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
}

#[derive(Debug, Clone)]
struct Block {
    ln1: LayerNorm,
    attn: MultiHeadAttention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = self.ln1.forward(x)?;
        let x = (x + self.attn.forward(&n, &n, None)?)?;
        let m = self
            .fc2
            .forward(&kernels::gelu(&self.fc1.forward(&self.ln2.forward(&x)?)?)?)?;
        x + m
    }
}

#[derive(Debug, Clone)]
pub struct TextEncoder {
    token_embedding: Tensor,
    position_embedding: Tensor,
    blocks: Vec<Block>,
    final_ln: LayerNorm,
}

impl TextEncoder {
    pub fn new(cfg: TextEncoderConfig, vb: VarBuilder) -> Result<Self> {
        let init = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let w = cfg.width;
        let blocks = (0..cfg.layers)
            .map(|i| {
                let vb = vb.pp(format!("blocks.{i}"));
                let attn = AttentionConfig {
                    dim: w,
                    context_dim: w,
                    heads: cfg.heads,
                    qkv_bias: true,
                    dropout: 0.0,
                };
                Ok(Block {
                    ln1: LayerNorm::new(w, vb.pp("ln1"))?,
                    attn: MultiHeadAttention::new(attn, vb.pp("attn"))?,
                    ln2: LayerNorm::new(w, vb.pp("ln2"))?,
                    fc1: Linear::new(w, 4 * w, true, vb.pp("fc1"))?,
                    fc2: Linear::new(4 * w, w, true, vb.pp("fc2"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            token_embedding: vb.get_with_hints((cfg.vocab, w), "token_embedding", init)?,
            position_embedding: vb.get_with_hints(
                (cfg.max_tokens, w),
                "position_embedding",
                init,
            )?,
            blocks,
            final_ln: LayerNorm::new(w, vb.pp("final_ln"))?,
        })
    }

    /// Token ids (B, T) as u32 -> context (B, T, width).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let tokens = self.token_embedding.index_select(&ids.flatten_all()?, 0)?; // (B*T, w)
        let w = tokens.dim(1)?;
        let mut x = tokens
            .reshape((b, t, w))?
            .broadcast_add(&self.position_embedding.narrow(0, 0, t)?)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        self.final_ln.forward(&x)
    }
}
