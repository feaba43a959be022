//! Sums over every dimension but the second: (B, C, ...) -> (C), the gradient of a bias added
//! per channel (convolutions) or per feature (linear layers, as (rows, features)). candle's
//! own sum over the first dimension of a (rows, features) matrix walks it column by column.
//! Differentiable: its gradient is the upstream one broadcast back.

use super::util::{multiversion, slice};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

multiversion! {
    /// Per-channel sums of dy (B, C, P) -> (C), accumulated in f64 per (b, c) row.
    fn channel_sum_impl(dy: &[f32], b: usize, c: usize, p: usize, out: &mut [f32]) {
        let mut acc = vec![0f64; c];
        for block in dy.chunks_exact(c * p).take(b) {
            if p == 1 {
                // One value per channel: add the whole row at once.
                for (a, v) in acc.iter_mut().zip(block) {
                    *a += *v as f64;
                }
                continue;
            }
            for (a, row) in acc.iter_mut().zip(block.chunks_exact(p)) {
                let mut lanes = [0f32; 16];
                let mut it = row.chunks_exact(16);
                for ch in &mut it {
                    for (l, v) in lanes.iter_mut().zip(ch) {
                        *l += *v;
                    }
                }
                let mut s: f32 = it.remainder().iter().sum();
                s += lanes.iter().sum::<f32>();
                *a += s as f64;
            }
        }
        for (o, a) in out.iter_mut().zip(&acc) {
            *o = *a as f32;
        }
    }
}

/// The sums of `t` (B, C, ...) over all dimensions but the second: (C).
pub(crate) fn channel_sum(t: &Tensor) -> Result<Tensor> {
    t.contiguous()?.apply_op1(ChannelSum)
}

/// (B, C, ...) -> (C)
struct ChannelSum;

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "kernels-channel-sum"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = l.shape().dims();
        let [b, c, rest @ ..] = dims else {
            candle_core::bail!("channel sum: expected (B, C, ...), got {dims:?}");
        };
        let (b, c) = (*b, *c);
        let p: usize = rest.iter().product();
        let mut out = vec![0f32; c];
        if c * p > 0 {
            channel_sum_impl(slice(s, l, "channel sum")?, b, c, p, &mut out);
        }
        Ok((CpuStorage::F32(out), Shape::from(c)))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, gr: &Tensor) -> Result<Option<Tensor>> {
        let mut shape = vec![1usize; arg.rank()];
        shape[1] = arg.dim(1)?;
        Ok(Some(gr.reshape(shape)?.broadcast_as(arg.shape())?))
    }
}
