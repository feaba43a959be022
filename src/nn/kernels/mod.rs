//! The hot operations of the networks, behind one small API so faster implementations can
//! replace the composite candle ops without touching the models.
//!
//! Every function here works on any device and dtype and keeps autograd working. On the CPU
//! in f32 they run hand-written kernels (candle custom ops with their own backward, see the
//! submodules); anything else takes the stock candle composition (the `*_reference` functions),
//! which is also what the tests compare the kernels against.
//!
//! The kernels split their work over candle's own CPU worker pool (CANDLE_NUM_THREADS /
//! RAYON_NUM_THREADS, by default one thread per physical core) and take contiguous copies of
//! strided inputs. Gradients:
//! - conv2d: input, weight and bias; the backward ops have their own backward (second order
//!   works, with CANDLE_GRAD_DO_NOT_DETACH set as candle requires).
//! - upsample_nearest2x: the 2x2 block sum, itself differentiable.
//! - linear: input (only when it carries a graph), weight and bias, as candle matmuls (second
//!   order works).
//! - group_norm, layer_norm, attention, softmax_last_dim, gelu, geglu: first order only (their gradients are computed
//!   directly and carry no graph; candle detaches gradients by default anyway).
//!
//! On the fast path: conv2d with any stride, padding and kernel size (rank-4 input and
//! weight, rank-1 bias); group_norm over any (B, C, ...); layer_norm over the last dimension
//! of any rank; upsample_nearest2x of rank-4 input;
//! linear over the last dimension of any rank with a rank-2 weight; gelu of anything; geglu
//! over the last dimension (of even length); attention over
//! (..., T, D) x (..., S, D) with equal leading dimensions; softmax over the last
//! dimension. Other ranks, dtypes and devices take the stock path.

mod attention;
mod channel_sum;
mod conv;
mod gelu;
mod group_norm;
mod layer_norm;
mod linear;
mod small_map;
mod transpose;
mod upsample;
mod util;
pub(crate) use util::{multiversion, uninit_vec, with_slice};
mod winograd;
#[cfg(target_arch = "x86_64")]
mod winograd_w8;

use candle_core::{D, Result, Tensor};
use util::fast_path;

/// Makes glibc's malloc keep freed memory for reuse instead of handing every large block back
/// to the kernel: tensors of a training step are allocated and freed over and over, and with
/// glibc's defaults each big one comes back as fresh pages that fault in one by one (and are
/// unmapped again with cross-core TLB flushes). Measured here it halves forward+backward time
/// of the memory-bound ops (GroupNorm, upsampling). Call once at start-up, before the threads
/// start; a process-wide setting, so it is left to the binary to opt in. Returns whether it
/// applied (false off glibc).
pub fn tune_cpu_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        const M_TRIM_THRESHOLD: std::ffi::c_int = -1;
        const M_MMAP_THRESHOLD: std::ffi::c_int = -3;
        // SAFETY: mallopt only changes allocator parameters; the values are in glibc's range
        // (the mmap threshold's maximum on 64-bit is 32 MiB).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1 && mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// 2-D convolution of `x` (B, C_in, H, W) with `w` (C_out, C_in, kh, kw) plus optional bias (C_out).
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let ts: Vec<&Tensor> = [Some(x), Some(w), bias].into_iter().flatten().collect();
    if fast_path(&ts) && x.rank() == 4 && w.rank() == 4 && bias.is_none_or(|b| b.rank() == 1) {
        let op = conv::ConvFwd {
            stride,
            pad: padding,
        };
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        return match bias {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, op),
            None => x.apply_op2(&w, op),
        };
    }
    conv2d_reference(x, w, bias, stride, padding)
}

/// [`conv2d`] built from candle's own ops.
pub fn conv2d_reference(
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

/// x (..., d_in) · wᵀ (w: d_out x d_in) plus optional bias (d_out) over the last dimension.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let ts: Vec<&Tensor> = [Some(x), Some(w), bias].into_iter().flatten().collect();
    if fast_path(&ts) && x.rank() >= 1 && w.rank() == 2 && bias.is_none_or(|b| b.rank() == 1) {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        return match bias {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, linear::Linear),
            None => x.apply_op2(&w, linear::Linear),
        };
    }
    linear_reference(x, w, bias)
}

/// [`linear`] built from candle's own ops.
pub fn linear_reference(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let d_in = *dims.last().unwrap_or(&0);
    let y = x.reshape(((), d_in))?.matmul(&w.t()?)?;
    let y = match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    let mut out = dims;
    if let Some(last) = out.last_mut() {
        *last = w.dim(0)?;
    }
    y.reshape(out)
}

/// GELU in its exact (erf) form, elementwise.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if fast_path(&[x]) {
        return x.contiguous()?.apply_op1(gelu::Gelu);
    }
    gelu_reference(x)
}

/// [`gelu`] as candle's own op.
pub fn gelu_reference(x: &Tensor) -> Result<Tensor> {
    x.gelu_erf()
}

/// GEGLU: u · GELU(gate) where (u, gate) are the two halves of the last dimension of `f`.
pub fn geglu(f: &Tensor) -> Result<Tensor> {
    if fast_path(&[f]) && f.rank() >= 1 {
        return f.contiguous()?.apply_op1(gelu::Geglu);
    }
    geglu_reference(f)
}

/// [`geglu`] built from candle's own ops.
pub fn geglu_reference(f: &Tensor) -> Result<Tensor> {
    let last = f.rank().saturating_sub(1);
    let n = f.dim(last)? / 2;
    f.narrow(last, 0, n)? * f.narrow(last, n, n)?.gelu_erf()?
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
    if fast_path(&[x, gamma, beta]) && x.rank() >= 2 {
        let (x, g, b) = (x.contiguous()?, gamma.contiguous()?, beta.contiguous()?);
        return x.apply_op3(&g, &b, group_norm::GroupNorm::new(groups, eps, silu));
    }
    group_norm_reference(x, gamma, beta, groups, eps, silu)
}

/// [`group_norm`] built from candle's own ops.
pub fn group_norm_reference(
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

/// LayerNorm over the last dimension with per-feature affine `gamma`, `beta`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if fast_path(&[x, gamma, beta]) && x.rank() >= 1 {
        let (x, g, b) = (x.contiguous()?, gamma.contiguous()?, beta.contiguous()?);
        return x.apply_op3(&g, &b, layer_norm::LayerNorm::new(eps));
    }
    layer_norm_reference(x, gamma, beta, eps)
}

/// [`layer_norm`] built from candle's own ops.
pub fn layer_norm_reference(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    centered
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(gamma)?
        .broadcast_add(beta)
}

/// Nearest-neighbour 2x upsampling of (B, C, H, W), with a gradient that accumulates
/// correctly (candle's own `upsample_nearest2d` backward overwrites it).
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    if fast_path(&[x]) && x.rank() == 4 {
        return x.contiguous()?.apply_op1(upsample::Up2x);
    }
    upsample_nearest2x_reference(x)
}

/// [`upsample_nearest2x`] built from candle's own ops.
pub fn upsample_nearest2x_reference(x: &Tensor) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    x.reshape((b, c, h, 1, w, 1))?
        .broadcast_as((b, c, h, 2, w, 2))?
        .reshape((b, c, 2 * h, 2 * w))
}

/// Scaled dot-product attention: softmax(q k^T * scale) v for q (B, T, D), k and v (B, S, D).
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    if fast_path(&[q, k, v]) && q.rank() >= 2 {
        let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
        return q.apply_op3(&k, &v, attention::Attention::new(scale as f32));
    }
    attention_reference(q, k, v, scale)
}

/// [`attention`] built from candle's own ops.
pub fn attention_reference(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let scores = (q.matmul(&k.t()?)? * scale)?; // (B, T, S)
    softmax_last_dim_reference(&scores)?.matmul(v)
}

/// Softmax over the last dimension, differentiable (candle-nn's fused one has no backward).
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fast_path(&[x]) && x.rank() >= 1 {
        return x.contiguous()?.apply_op1(attention::Softmax);
    }
    softmax_last_dim_reference(x)
}

/// [`softmax_last_dim`] built from candle's own ops.
pub fn softmax_last_dim_reference(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}
