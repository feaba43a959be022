//! 2-D convolution on the CPU in f32: im2col + sgemm (the `gemm` crate), NCHW.
//!
//! Work is cut into units of `g` whole images; a unit's im2col matrix is K x (g·P) with
//! K = Cin·kh·kw and P = OH·OW, so small feature maps still give the GEMM a wide N. Units run
//! in parallel, each with a single-threaded GEMM and per-thread scratch buffers; when there
//! are fewer units than threads the GEMM itself is threaded instead.
//!
//! Stride-1, padding-1 3x3 convolutions with at least 32 channels on both sides go through
//! Winograd F(2x2, 3x3) instead (see `winograd.rs`; LDM_KERNELS_NO_WINOGRAD=1 turns it off),
//! and stride-1 convolutions on maps of at most 4 pixels as one dense GEMM (`small_map.rs`).
//!
//! Three ops, each the adjoint of the others, so gradients of gradients stay on this path:
//! forward y = F(x, w), input gradient dx = Gx(dy, w), weight gradient dw = Gw(x, dy).

use super::channel_sum::channel_sum;
use super::util::{
    SendPtr, multiversion, num_threads, par_fold, par_for, sgemm, slice, uninit_vec, with_scratch,
};
use super::{small_map, winograd};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// Aim for about this many GEMM columns (g·P) per work unit.
const TARGET_COLS: usize = 512;

/// Shapes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geom {
    pub b: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    pub(crate) fn new(
        x: (usize, usize, usize, usize),
        wt: (usize, usize, usize, usize),
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let (b, cin, h, w) = x;
        let (cout, cin2, kh, kw) = wt;
        if cin != cin2 {
            candle_core::bail!("conv2d: input has {cin} channels, weight expects {cin2}");
        }
        if stride == 0 {
            candle_core::bail!("conv2d: stride must be positive");
        }
        if h + 2 * pad < kh || w + 2 * pad < kw {
            candle_core::bail!("conv2d: kernel {kh}x{kw} larger than padded input {h}x{w}+{pad}");
        }
        let oh = (h + 2 * pad - kh) / stride + 1;
        let ow = (w + 2 * pad - kw) / stride + 1;
        Ok(Self {
            b,
            cin,
            h,
            w,
            cout,
            kh,
            kw,
            stride,
            pad,
            oh,
            ow,
        })
    }
    fn k(&self) -> usize {
        self.cin * self.kh * self.kw
    }
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    fn hw(&self) -> usize {
        self.h * self.w
    }
    /// Stride 1 with the output as large as the input (3x3 with padding 1 and the like).
    fn same(&self) -> bool {
        self.stride == 1 && self.oh == self.h && self.ow == self.w && self.w > 0
    }
    /// 1x1, stride 1, no padding: the input image already is the im2col matrix.
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    /// (images per unit, number of units, threads for each GEMM).
    fn split(&self) -> (usize, usize, usize) {
        let nt = num_threads();
        let per_thread = self.b.div_ceil(nt).max(1);
        let g = (TARGET_COLS / self.p().max(1)).clamp(1, per_thread);
        let units = self.b.div_ceil(g);
        let gemm_threads = if units >= nt { 1 } else { nt };
        (g, units, gemm_threads)
    }
    fn x_shape(&self) -> Shape {
        (self.b, self.cin, self.h, self.w).into()
    }
    fn y_shape(&self) -> Shape {
        (self.b, self.cout, self.oh, self.ow).into()
    }
    fn w_shape(&self) -> Shape {
        (self.cout, self.cin, self.kh, self.kw).into()
    }
}

/// Valid output columns [lo, hi) for kernel column `kx`: those whose input column is inside.
#[inline]
fn valid_range(k: usize, pad: usize, stride: usize, n_in: usize, n_out: usize) -> (usize, usize) {
    // input index = o * stride + k - pad must lie in [0, n_in)
    let lo = if pad > k {
        (pad - k).div_ceil(stride)
    } else {
        0
    };
    let hi = if n_in + pad > k {
        ((n_in + pad - k - 1) / stride + 1).min(n_out)
    } else {
        0
    };
    (lo.min(n_out), hi.max(lo.min(n_out)))
}

/// For a stride-1 "same" convolution: the flat offset of tap (ky, kx) into the plane and the
/// range [lo, hi) of output positions whose flat source index lies inside the plane.
#[inline(always)]
fn same_shift(ky: usize, kx: usize, pad: usize, w: usize, p: usize) -> (isize, usize, usize) {
    let shift = (ky as isize - pad as isize) * w as isize + (kx as isize - pad as isize);
    let lo = (-shift).clamp(0, p as isize) as usize;
    let hi = (p as isize - shift).clamp(0, p as isize) as usize;
    (shift, lo, hi.max(lo))
}

/// Zeroes the positions of a shifted row whose source column fell off the left or right edge.
#[inline(always)]
fn zero_wrapped(row: &mut [f32], kx: usize, pad: usize, w: usize) {
    if kx < pad {
        let c = (pad - kx).min(w);
        for r in row.chunks_exact_mut(w) {
            r[..c].fill(0.0);
        }
    } else if kx > pad {
        let c = (kx - pad).min(w);
        for r in row.chunks_exact_mut(w) {
            r[w - c..].fill(0.0);
        }
    }
}

multiversion! {
    /// Writes the im2col rows of one image into `col` (row length `ld`, starting at column `off`).
    fn im2col(x: &[f32], g: &Geom, col: &mut [f32], ld: usize, off: usize) {
        let (h, w, s, pad, oh, ow) = (g.h, g.w, g.stride, g.pad, g.oh, g.ow);
        let p = oh * ow;
        if g.same() {
            // Each row is the whole plane shifted by one flat offset, with the positions whose
            // source column wrapped around into the next row zeroed afterwards.
            for ci in 0..g.cin {
                let plane = &x[ci * p..(ci + 1) * p];
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let r = (ci * g.kh + ky) * g.kw + kx;
                        let row = &mut col[r * ld + off..r * ld + off + p];
                        let (shift, lo, hi) = same_shift(ky, kx, pad, w, p);
                        row[..lo].fill(0.0);
                        if lo < hi {
                            row[lo..hi].copy_from_slice(&plane[(lo as isize + shift) as usize..(hi as isize + shift) as usize]);
                        }
                        row[hi..].fill(0.0);
                        zero_wrapped(row, kx, pad, w);
                    }
                }
            }
            return;
        }
        for ci in 0..g.cin {
            let plane = &x[ci * h * w..(ci + 1) * h * w];
            for ky in 0..g.kh {
                let (ylo, yhi) = valid_range(ky, pad, s, h, oh);
                for kx in 0..g.kw {
                    let r = (ci * g.kh + ky) * g.kw + kx;
                    let row = &mut col[r * ld + off..r * ld + off + p];
                    let (xlo, xhi) = valid_range(kx, pad, s, w, ow);
                    row[..ylo * ow].fill(0.0);
                    row[yhi * ow..].fill(0.0);
                    for oy in ylo..yhi {
                        let iy = oy * s + ky - pad;
                        let src = &plane[iy * w..(iy + 1) * w];
                        let out = &mut row[oy * ow..(oy + 1) * ow];
                        out[..xlo].fill(0.0);
                        out[xhi..].fill(0.0);
                        if xlo < xhi {
                            let i0 = xlo * s + kx - pad;
                            if s == 1 {
                                out[xlo..xhi].copy_from_slice(&src[i0..i0 + (xhi - xlo)]);
                            } else {
                                for (o, ox) in out[xlo..xhi].iter_mut().zip(0..) {
                                    *o = src[i0 + ox * s];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

multiversion! {
    /// Adds the im2col-shaped gradient `col` of one image back into `dx` (which it accumulates).
    fn col2im(col: &mut [f32], g: &Geom, dx: &mut [f32], ld: usize, off: usize) {
        let (h, w, s, pad, oh, ow) = (g.h, g.w, g.stride, g.pad, g.oh, g.ow);
        let p = oh * ow;
        if g.same() {
            // The adjoint of the shifted copy above: zero the wrapped positions (col is
            // scratch), then add the row into the plane at one flat offset.
            for ci in 0..g.cin {
                let plane = &mut dx[ci * p..(ci + 1) * p];
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let r = (ci * g.kh + ky) * g.kw + kx;
                        let row = &mut col[r * ld + off..r * ld + off + p];
                        let (shift, lo, hi) = same_shift(ky, kx, pad, w, p);
                        zero_wrapped(row, kx, pad, w);
                        if lo < hi {
                            let dst = &mut plane[(lo as isize + shift) as usize..(hi as isize + shift) as usize];
                            for (d, v) in dst.iter_mut().zip(&row[lo..hi]) {
                                *d += *v;
                            }
                        }
                    }
                }
            }
            return;
        }
        for ci in 0..g.cin {
            let plane = &mut dx[ci * h * w..(ci + 1) * h * w];
            for ky in 0..g.kh {
                let (ylo, yhi) = valid_range(ky, pad, s, h, oh);
                for kx in 0..g.kw {
                    let r = (ci * g.kh + ky) * g.kw + kx;
                    let row = &col[r * ld + off..r * ld + off + p];
                    let (xlo, xhi) = valid_range(kx, pad, s, w, ow);
                    if xlo >= xhi {
                        continue;
                    }
                    for oy in ylo..yhi {
                        let iy = oy * s + ky - pad;
                        let dst = &mut plane[iy * w..(iy + 1) * w];
                        let src = &row[oy * ow + xlo..oy * ow + xhi];
                        let i0 = xlo * s + kx - pad;
                        if s == 1 {
                            for (d, v) in dst[i0..i0 + src.len()].iter_mut().zip(src) {
                                *d += *v;
                            }
                        } else {
                            for (j, v) in src.iter().enumerate() {
                                dst[i0 + j * s] += *v;
                            }
                        }
                    }
                }
            }
        }
    }
}

multiversion! {
    /// y[j][co][p] = tmp[co][j·P + p] + bias[co] for the g images of a unit.
    fn scatter_out(tmp: &[f32], bias: Option<&[f32]>, y: &mut [f32], cout: usize, p: usize, g: usize) {
        let n = g * p;
        for j in 0..g {
            for co in 0..cout {
                let src = &tmp[co * n + j * p..co * n + j * p + p];
                let dst = &mut y[(j * cout + co) * p..(j * cout + co + 1) * p];
                let bv = bias.map_or(0.0, |b| b[co]);
                for (d, s) in dst.iter_mut().zip(src) {
                    *d = *s + bv;
                }
            }
        }
    }
}

/// tmp[c][j·P + p] = y[j][c][p]: the inverse of `scatter_out` without bias.
fn gather(y: &[f32], tmp: &mut [f32], c: usize, p: usize, g: usize) {
    let n = g * p;
    for j in 0..g {
        for ci in 0..c {
            tmp[ci * n + j * p..ci * n + j * p + p]
                .copy_from_slice(&y[(j * c + ci) * p..(j * c + ci + 1) * p]);
        }
    }
}

/// Forward: y (B, Cout, OH, OW) = conv(x, w) + bias.
pub(crate) fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &Geom) -> Vec<f32> {
    if small_map::applies(g) {
        return small_map::forward(x, w, bias, g);
    }
    if winograd::applies(g) {
        return winograd::forward(x, w, bias, g);
    }
    let (k, p, cout) = (g.k(), g.p(), g.cout);
    let mut y = uninit_vec(g.b * cout * p);
    let (gi, units, gt) = g.split();
    let yp = SendPtr(y.as_mut_ptr());
    let unit = |u: usize| {
        let b0 = u * gi;
        let gn = gi.min(g.b - b0);
        let n = gn * p;
        // SAFETY: unit u owns output images b0..b0+gn.
        let yu =
            unsafe { std::slice::from_raw_parts_mut(yp.get().add(b0 * cout * p), gn * cout * p) };
        let xu = &x[b0 * g.cin * g.hw()..(b0 + gn) * g.cin * g.hw()];
        if g.pointwise() && gn == 1 {
            if let Some(bias) = bias {
                for (co, row) in yu.chunks_exact_mut(p).enumerate() {
                    row.fill(bias[co]);
                }
            }
            // SAFETY: all matrices lie inside their slices with the strides given.
            unsafe {
                sgemm(
                    cout,
                    p,
                    k,
                    yu.as_mut_ptr(),
                    p as isize,
                    1,
                    bias.is_some(),
                    w.as_ptr(),
                    k as isize,
                    1,
                    xu.as_ptr(),
                    p as isize,
                    1,
                    1.0,
                    gt,
                )
            };
            return;
        }
        let col_len = if g.pointwise() { 0 } else { k * n };
        let tmp_len = if gn == 1 { 0 } else { cout * n };
        let pw_len = if g.pointwise() { k * n } else { 0 };
        with_scratch([col_len.max(pw_len), tmp_len, 0], |col, tmp, _| {
            if g.pointwise() {
                gather(xu, col, g.cin, p, gn);
            } else {
                for j in 0..gn {
                    im2col(
                        &xu[j * g.cin * g.hw()..(j + 1) * g.cin * g.hw()],
                        g,
                        col,
                        n,
                        j * p,
                    );
                }
            }
            if gn == 1 {
                if let Some(bias) = bias {
                    for (co, row) in yu.chunks_exact_mut(p).enumerate() {
                        row.fill(bias[co]);
                    }
                }
                // SAFETY: as above.
                unsafe {
                    sgemm(
                        cout,
                        n,
                        k,
                        yu.as_mut_ptr(),
                        n as isize,
                        1,
                        bias.is_some(),
                        w.as_ptr(),
                        k as isize,
                        1,
                        col.as_ptr(),
                        n as isize,
                        1,
                        1.0,
                        gt,
                    )
                };
            } else {
                // SAFETY: as above.
                unsafe {
                    sgemm(
                        cout,
                        n,
                        k,
                        tmp.as_mut_ptr(),
                        n as isize,
                        1,
                        false,
                        w.as_ptr(),
                        k as isize,
                        1,
                        col.as_ptr(),
                        n as isize,
                        1,
                        1.0,
                        gt,
                    )
                };
                scatter_out(tmp, bias, yu, cout, p, gn);
            }
        });
    };
    if gt == 1 {
        par_for(units, unit);
    } else {
        (0..units).for_each(unit);
    }
    y
}

/// Input gradient: dx (B, Cin, H, W) from dy (B, Cout, OH, OW) and w.
pub(crate) fn input_grad(dy: &[f32], w: &[f32], g: &Geom) -> Vec<f32> {
    if small_map::applies(g) {
        return small_map::input_grad(dy, w, g);
    }
    if winograd::applies(g) {
        return winograd::input_grad(dy, w, g);
    }
    let (k, p, cout, cin, hw) = (g.k(), g.p(), g.cout, g.cin, g.hw());
    let mut dx = if g.pointwise() {
        uninit_vec(g.b * cin * hw)
    } else {
        vec![0.0; g.b * cin * hw]
    };
    let (gi, units, gt) = g.split();
    let dxp = SendPtr(dx.as_mut_ptr());
    let unit = |u: usize| {
        let b0 = u * gi;
        let gn = gi.min(g.b - b0);
        let n = gn * p;
        // SAFETY: unit u owns input images b0..b0+gn.
        let dxu =
            unsafe { std::slice::from_raw_parts_mut(dxp.get().add(b0 * cin * hw), gn * cin * hw) };
        let dyu = &dy[b0 * cout * p..(b0 + gn) * cout * p];
        let tmp_len = if gn == 1 { 0 } else { cout * n };
        let col_len = if g.pointwise() && gn == 1 { 0 } else { k * n };
        with_scratch([col_len, tmp_len, 0], |col, tmp, _| {
            let (rhs, ld) = if gn == 1 {
                (dyu, n)
            } else {
                gather(dyu, tmp, cout, p, gn);
                (&*tmp, n)
            };
            // dcol (K x N) = w^T (K x Cout) · dy (Cout x N)
            let (dst, dst_rs) = if g.pointwise() && gn == 1 {
                (dxu.as_mut_ptr(), p)
            } else {
                (col.as_mut_ptr(), n)
            };
            // SAFETY: all matrices lie inside their slices with the strides given.
            unsafe {
                sgemm(
                    k,
                    n,
                    cout,
                    dst,
                    dst_rs as isize,
                    1,
                    false,
                    w.as_ptr(),
                    1,
                    k as isize,
                    rhs.as_ptr(),
                    ld as isize,
                    1,
                    1.0,
                    gt,
                )
            };
            if g.pointwise() {
                if gn > 1 {
                    // col is (Cin x g·P): scatter back image by image.
                    scatter_out(col, None, dxu, cin, p, gn);
                }
            } else {
                for j in 0..gn {
                    col2im(col, g, &mut dxu[j * cin * hw..(j + 1) * cin * hw], n, j * p);
                }
            }
        });
    };
    if gt == 1 {
        par_for(units, unit);
    } else {
        (0..units).for_each(unit);
    }
    dx
}

/// Weight gradient: dw (Cout, Cin, kh, kw) from x and dy.
pub(crate) fn weight_grad(x: &[f32], dy: &[f32], g: &Geom) -> Vec<f32> {
    if small_map::applies(g) {
        return small_map::weight_grad(x, dy, g);
    }
    if winograd::applies(g) {
        return winograd::weight_grad(x, dy, g);
    }
    let (k, p, cout, cin, hw) = (g.k(), g.p(), g.cout, g.cin, g.hw());
    let (gi, units, gt) = g.split();
    // Each pool thread accumulates its own dw over the units it takes; then they are summed.
    let unit = |acc: &mut Vec<f32>, u: usize| {
        {
            let b0 = u * gi;
            let gn = gi.min(g.b - b0);
            let n = gn * p;
            let xu = &x[b0 * cin * hw..(b0 + gn) * cin * hw];
            let dyu = &dy[b0 * cout * p..(b0 + gn) * cout * p];
            let direct = g.pointwise() && gn == 1;
            let col_len = if direct { 0 } else { k * n };
            let tmp_len = if gn == 1 { 0 } else { cout * n };
            with_scratch([col_len, tmp_len, 0], |col, tmp, _| {
                let cols: &[f32] = if direct {
                    xu
                } else {
                    if g.pointwise() {
                        gather(xu, col, cin, p, gn);
                    } else {
                        for j in 0..gn {
                            im2col(&xu[j * cin * hw..(j + 1) * cin * hw], g, col, n, j * p);
                        }
                    }
                    col
                };
                let lhs: &[f32] = if gn == 1 {
                    dyu
                } else {
                    gather(dyu, tmp, cout, p, gn);
                    tmp
                };
                // acc (Cout x K) += dy (Cout x N) · col^T (N x K)
                // SAFETY: all matrices lie inside their slices with the strides given.
                unsafe {
                    sgemm(
                        cout,
                        k,
                        n,
                        acc.as_mut_ptr(),
                        k as isize,
                        1,
                        true,
                        lhs.as_ptr(),
                        n as isize,
                        1,
                        cols.as_ptr(),
                        1,
                        n as isize,
                        1.0,
                        gt,
                    )
                };
            });
        }
    };
    let init = || vec![0.0f32; cout * k];
    let mut parts: Vec<Vec<f32>> = if gt == 1 {
        par_fold(units, init, unit)
    } else {
        let mut acc = init();
        (0..units).for_each(|u| unit(&mut acc, u));
        vec![acc]
    };
    if parts.is_empty() {
        return init();
    }
    let mut dw = parts.swap_remove(0);
    for part in parts {
        add_assign(&mut dw, &part);
    }
    dw
}

multiversion! {
    fn add_assign(a: &mut [f32], b: &[f32]) {
        for (x, y) in a.iter_mut().zip(b) {
            *x += *y;
        }
    }
}

// ---------------------------------------------------------------------------------------
// candle ops

fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

/// y = conv(x, w) [+ bias]
pub(crate) struct ConvFwd {
    pub stride: usize,
    pub pad: usize,
}

impl ConvFwd {
    fn geom(&self, l1: &Layout, l2: &Layout) -> Result<Geom> {
        Geom::new(dims4(l1)?, dims4(l2)?, self.stride, self.pad)
    }
    /// (dx if x carries a graph, dw)
    fn grads(&self, x: &Tensor, w: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Tensor)> {
        let g = Geom::new(x.dims4()?, w.dims4()?, self.stride, self.pad)?;
        let dy = dy.contiguous()?;
        let dx = if x.track_op() {
            Some(dy.apply_op2(w, ConvInputGrad { g })?)
        } else {
            None
        };
        let dw = x.apply_op2(&dy, ConvWeightGrad { g })?;
        Ok((dx, dw))
    }
}

impl CustomOp2 for ConvFwd {
    fn name(&self) -> &'static str {
        "kernels-conv2d"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(l1, l2)?;
        let y = forward(slice(s1, l1, "conv2d")?, slice(s2, l2, "conv2d")?, None, &g);
        Ok((CpuStorage::F32(y), g.y_shape()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.grads(x, w, dy)?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp3 for ConvFwd {
    fn name(&self) -> &'static str {
        "kernels-conv2d-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.geom(l1, l2)?;
        let bias = slice(s3, l3, "conv2d")?;
        if bias.len() != g.cout {
            candle_core::bail!(
                "conv2d: bias has {} elements for {} channels",
                bias.len(),
                g.cout
            );
        }
        let y = forward(
            slice(s1, l1, "conv2d")?,
            slice(s2, l2, "conv2d")?,
            Some(bias),
            &g,
        );
        Ok((CpuStorage::F32(y), g.y_shape()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = self.grads(x, w, dy)?;
        let db = channel_sum(dy)?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// dx = Gx(dy, w); its own gradient: d(dy) = F(g, w), d(w) = Gw(g, dy).
struct ConvInputGrad {
    g: Geom,
}

impl CustomOp2 for ConvInputGrad {
    fn name(&self) -> &'static str {
        "kernels-conv2d-input-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.g;
        if l1.shape() != &g.y_shape() || l2.shape() != &g.w_shape() {
            candle_core::bail!("conv2d input grad: shape mismatch");
        }
        let dx = input_grad(slice(s1, l1, "conv2d")?, slice(s2, l2, "conv2d")?, g);
        Ok((CpuStorage::F32(dx), g.x_shape()))
    }
    fn bwd(
        &self,
        dy: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        gr: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gr = gr.contiguous()?;
        let ddy = gr.apply_op2(
            w,
            ConvFwd {
                stride: self.g.stride,
                pad: self.g.pad,
            },
        )?;
        let dw = gr.apply_op2(dy, ConvWeightGrad { g: self.g })?;
        Ok((Some(ddy), Some(dw)))
    }
}

/// dw = Gw(x, dy); its own gradient: d(x) = Gx(dy, g), d(dy) = F(x, g).
struct ConvWeightGrad {
    g: Geom,
}

impl CustomOp2 for ConvWeightGrad {
    fn name(&self) -> &'static str {
        "kernels-conv2d-weight-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.g;
        if l1.shape() != &g.x_shape() || l2.shape() != &g.y_shape() {
            candle_core::bail!("conv2d weight grad: shape mismatch");
        }
        let dw = weight_grad(slice(s1, l1, "conv2d")?, slice(s2, l2, "conv2d")?, g);
        Ok((CpuStorage::F32(dw), g.w_shape()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        dy: &Tensor,
        _res: &Tensor,
        gr: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gr = gr.contiguous()?;
        let dx = dy.apply_op2(&gr, ConvInputGrad { g: self.g })?;
        let ddy = x.apply_op2(
            &gr,
            ConvFwd {
                stride: self.g.stride,
                pad: self.g.pad,
            },
        )?;
        Ok((Some(dx), Some(ddy)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ranges() {
        // stride 1, pad 1, k in 0..3, 5 wide
        assert_eq!(valid_range(0, 1, 1, 5, 5), (1, 5));
        assert_eq!(valid_range(1, 1, 1, 5, 5), (0, 5));
        assert_eq!(valid_range(2, 1, 1, 5, 5), (0, 4));
        // stride 2, pad 0, 3x3 on 9 -> 4 outputs
        assert_eq!(valid_range(2, 0, 2, 9, 4), (0, 4));
        // stride 2, pad 1 on 4 -> 2 outputs; k=0: o*2-1 >= 0 -> o >= 1
        assert_eq!(valid_range(0, 1, 2, 4, 2), (1, 2));
    }
}
