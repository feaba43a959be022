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
        let (_, t, width) = x.dims3()?;
        let (_, s, c) = context.dims3()?;
        let h = self.heads(x, context, self.reassociate(t, s, c, width))?;
        self.dropout.forward(&self.to_out.forward(&h)?, rng)
    }

    /// The heads' outputs side by side (B, T, dim), before the output projection, through the
    /// projected keys and values or ([`Self::heads_through_context`]) around them.
    fn heads(&self, x: &Tensor, context: &Tensor, through_context: bool) -> Result<Tensor> {
        let q = self.to_q.forward(x)?;
        if through_context {
            return self.heads_through_context(&q, context);
        }
        let (b, t, width) = x.dims3()?;
        let q = self.split_heads(&q)?;
        let k = self.split_heads(&self.to_k.forward(context)?)?;
        let v = self.split_heads(&self.to_v.forward(context)?)?;
        let d = width / self.heads;
        let h = kernels::attention(&q, &k, &v, 1.0 / (d as f64).sqrt())?; // (B*H, T, d)
        h.reshape((b, self.heads, t, d))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, t, width))
    }

    /// Whether [`Self::heads_through_context`] takes fewer multiply-adds than projecting the
    /// context to keys and values: T queries of width d against S context tokens of width C
    /// cost S·C·d (keys; values the same) + T·S·d (scores; weighted sum the same) that way,
    /// and T·d·C + H·T·S·C the other way round. The key and value projections must have no
    /// bias (a key bias shifts every score of a query alike, a value bias the output, so both
    /// could be carried through, but this network's have none).
    fn reassociate(&self, t: usize, s: usize, c: usize, d: usize) -> bool {
        let bias = self.to_k.bias().is_some() || self.to_v.bias().is_some();
        !bias && t * d * c + self.heads * t * s * c < s * c * d + t * s * d
    }

    /// The attention of every head with the projections moved to the other side of the
    /// products: softmax(q_h Wk_hᵀ ctxᵀ) ctx Wv_hᵀ = attention(q_h Wk_h, ctx, ctx) Wv_hᵀ, so the
    /// context is never projected (the cross-attention of the seed UNet: 77 tokens of width
    /// 768 against 16 or 4 queries). q (B, T, H·dh) -> (B, T, H·dh).
    fn heads_through_context(&self, q: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, t, width) = q.dims3()?;
        let d = width / self.heads;
        let scale = 1.0 / (d as f64).sqrt();
        let heads = (0..self.heads)
            .map(|h| {
                let wk = self.to_k.weight().narrow(0, h * d, d)?; // (dh, C)
                let wv = self.to_v.weight().narrow(0, h * d, d)?;
                let qh = q.narrow(2, h * d, d)?.contiguous()?.reshape((b * t, d))?;
                let qk = qh.matmul(&wk)?.reshape((b, t, ()))?; // (B, T, C)
                let a = kernels::attention(&qk, context, context, scale)?; // (B, T, C)
                kernels::linear(&a, &wv, None) // (B, T, dh)
            })
            .collect::<Result<Vec<_>>>()?;
        match heads.as_slice() {
            [one] => Ok(one.clone()),
            _ => Tensor::cat(&heads, 2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::params::ParamStore;
    use candle_core::{Device, Var};

    /// The two ways round give the same outputs and gradients (for every weight, the queries'
    /// input, and a context that carries a graph), with two heads and odd sizes.
    #[test]
    fn heads_through_the_context_match_projected_keys_and_values() {
        let dev = Device::Cpu;
        let store = ParamStore::seeded(3, &dev);
        let cfg = AttentionConfig {
            dim: 10,
            context_dim: 37,
            heads: 2,
            qkv_bias: false,
            dropout: 0.0,
        };
        let attn = MultiHeadAttention::new(cfg, store.vb()).unwrap();
        // 3 queries against 21 tokens of width 37: fewer multiply-adds around the context.
        assert!(attn.reassociate(3, 21, 37, 10));
        assert!(!attn.reassociate(16, 2, 64, 64));
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 3, 10), &dev).unwrap()).unwrap();
        let ctx = Var::from_tensor(&Tensor::randn(0f32, 1., (2, 21, 37), &dev).unwrap()).unwrap();
        let r = Tensor::randn(0f32, 1., (2, 3, 10), &dev).unwrap();
        let run = |around: bool| {
            let h = attn.heads(x.as_tensor(), ctx.as_tensor(), around).unwrap();
            let g = (&h * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let mut out = vec![h];
            // Every weight before the output projection.
            for (name, v) in store.vars() {
                if !name.starts_with("to_out") {
                    out.push(g.get(v.as_tensor()).expect(&name).clone());
                }
            }
            out.push(g.get(x.as_tensor()).unwrap().clone());
            out.push(g.get(ctx.as_tensor()).unwrap().clone());
            out
        };
        for (i, (a, b)) in run(true).iter().zip(run(false)).enumerate() {
            let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (p, q) in a.iter().zip(&b) {
                assert!(
                    (p - q).abs() <= 1e-5 * scale + 1e-6,
                    "tensor {i}: {p} vs {q}"
                );
            }
        }
    }
}
