//! y = x·Wᵀ + b over the last dimension as one custom op: the bias is added inside the GEMM
//! (no broadcast node and no zero-filled gradient for it), and the backward skips the input
//! gradient when the input carries no graph. candle's own matmul backward always computes
//! both sides, which for a cross-attention's key and value projections of a fixed context
//! (rows x 768, S·B rows) is a third of their work and a context-sized zero-fill and add.
//!
//! The gradients are candle matmuls and a per-feature sum, so they stay differentiable.

use super::channel_sum::channel_sum;
use super::util::{num_threads, sgemm, slice, uninit_vec};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// (rows, d_in) of x and (d_out, d_in) of w, checked against each other.
fn dims(lx: &Layout, lw: &Layout) -> Result<(usize, usize, usize)> {
    let (d_out, d_in) = lw.shape().dims2()?;
    let xd = lx.shape().dims();
    if xd.last() != Some(&d_in) {
        candle_core::bail!("linear: input {xd:?} does not end in the weight's {d_in} inputs");
    }
    Ok((lx.shape().elem_count() / d_in.max(1), d_in, d_out))
}

fn out_shape(lx: &Layout, d_out: usize) -> Shape {
    let mut d = lx.shape().dims().to_vec();
    if let Some(last) = d.last_mut() {
        *last = d_out;
    }
    Shape::from(d)
}

/// y (rows x d_out) = bias + x (rows x d_in) · wᵀ.
fn forward(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    d_in: usize,
    d_out: usize,
) -> Vec<f32> {
    let mut y = uninit_vec(rows * d_out);
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(d_out.max(1)) {
            row.copy_from_slice(b);
        }
    }
    // SAFETY: y is rows x d_out, x rows x d_in, and wᵀ is read d_in x d_out from w (row-major
    // d_out x d_in).
    unsafe {
        sgemm(
            rows,
            d_out,
            d_in,
            y.as_mut_ptr(),
            d_out as isize,
            1,
            bias.is_some(),
            x.as_ptr(),
            d_in as isize,
            1,
            w.as_ptr(),
            1,
            d_in as isize,
            1.0,
            num_threads(),
        )
    };
    y
}

/// The forward on candle storage: shapes checked, bias length too.
fn run(
    sx: &CpuStorage,
    lx: &Layout,
    sw: &CpuStorage,
    lw: &Layout,
    bias: Option<&[f32]>,
) -> Result<(CpuStorage, Shape)> {
    let (rows, d_in, d_out) = dims(lx, lw)?;
    if let Some(b) = bias.filter(|b| b.len() != d_out) {
        candle_core::bail!("linear: bias has {} elements for {d_out} outputs", b.len());
    }
    let (x, w) = (slice(sx, lx, "linear")?, slice(sw, lw, "linear")?);
    let y = forward(x, w, bias, rows, d_in, d_out);
    Ok((CpuStorage::F32(y), out_shape(lx, d_out)))
}

/// (dx if x carries a graph, dw) for y = x·wᵀ and upstream gradient dy.
fn grads(x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Tensor)> {
    let d_in = w.dim(1)?;
    let d_out = w.dim(0)?;
    let dy2 = dy.reshape(((), d_out))?;
    let dx = if x.track_op() {
        Some(dy2.matmul(w)?.reshape(x.shape())?)
    } else {
        None
    };
    let dw = dy2.t()?.matmul(&x.reshape(((), d_in))?)?;
    Ok((dx, dw))
}

/// y = x·wᵀ
pub(crate) struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "kernels-linear"
    }
    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        run(sx, lx, sw, lw, None)
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = grads(x, w, dy)?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "kernels-linear-bias"
    }
    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        run(sx, lx, sw, lw, Some(slice(sb, lb, "linear")?))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = grads(x, w, dy)?;
        let d_out = w.dim(0)?;
        let db = channel_sum(&dy.reshape((dy.elem_count() / d_out.max(1), d_out))?)?;
        Ok((dx, Some(dw), Some(db)))
    }
}
