//! The hot operations of the networks, behind one small API so faster implementations can
//! replace the composite candle ops without touching the models.
//!
//! Every function here works on any device and keeps autograd working.

use candle_core::{D, Result, Tensor};

/// 2-D convolution of `x` (B, C_in, H, W) with `w` (C_out, C_in, kh, kw) plus optional bias (C_out).
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let y = x.conv2d(w, padding, stride, 1, 1)?;
    match bias {
        Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
        None => Ok(y),
    }
}

/// GroupNorm over (B, C, ...) with per-channel affine `gamma`, `beta`, optionally followed by SiLU.
pub fn group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (b, c) = (dims[0], dims[1]);
    let xg = x.reshape((b, groups, ()))?; // (B, G, C/G * HW)
    let mean = xg.mean_keepdim(D::Minus1)?;
    let centered = xg.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape(dims.as_slice())?;
    let mut shape = vec![1usize; dims.len()];
    shape[1] = c;
    let y = normed
        .broadcast_mul(&gamma.reshape(shape.as_slice())?)?
        .broadcast_add(&beta.reshape(shape.as_slice())?)?;
    if silu { y.silu() } else { Ok(y) }
}

/// Nearest-neighbour 2x upsampling of (B, C, H, W), with a gradient that accumulates
/// correctly (candle's own `upsample_nearest2d` backward overwrites it).
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))
}

/// Scaled dot-product attention: softmax(q k^T * scale) v for q (B, T, D), k and v (B, S, D).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let scores = (q.matmul(&k.t()?)? * scale)?; // (B, T, S)
    softmax_last_dim(&scores)?.matmul(v)
}

/// Softmax over the last dimension, differentiable (candle-nn's fused one has no backward).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}
