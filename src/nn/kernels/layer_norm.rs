//! LayerNorm over the last dimension on the CPU in f32, forward and backward, as one op each.
//! candle composes it from eight elementwise and reduction ops, and its backward from about
//! twenty more, each allocating (and its autograd zero-filling) a tensor of the input's size.
//!
//! Each row: mean and variance in two passes (the row stays in cache), then y = x̂·γ + β with
//! x̂ = (x - mean)·rstd. Backward per row: dx = rstd·(g - mean(g) - x̂·mean(g·x̂)) with g = dy·γ,
//! and the row's dy·x̂ and dy added into dγ and dβ. First order only.

use super::util::{SendPtr, multiversion, par_fold, slice, uninit_vec, with_slice};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

/// Rows handed to one pool task.
const ROWS_PER_TASK: usize = 64;

/// Σ f(a[i], b[i]) in sixteen f32 lanes (so the loop vectorises).
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [0f32; 16];
    let (mut ia, mut ib) = (a.chunks_exact(16), b.chunks_exact(16));
    for (ca, cb) in (&mut ia).zip(&mut ib) {
        for ((l, x), y) in lanes.iter_mut().zip(ca).zip(cb) {
            *l += f(*x, *y);
        }
    }
    let rest: f32 = ia
        .remainder()
        .iter()
        .zip(ib.remainder())
        .map(|(x, y)| f(*x, *y))
        .sum();
    rest + lanes.iter().sum::<f32>()
}

multiversion! {
    /// y rows from x rows (length d); (mean, rstd) of each row into `stats`.
    fn forward_rows(x: &[f32], y: &mut [f32], d: usize, gamma: &[f32], beta: &[f32], eps: f32, stats: &mut [(f32, f32)]) {
        for ((xr, yr), st) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).zip(stats.iter_mut()) {
            let mean = lane_sum(xr, xr, |v, _| v) / d as f32;
            let var = lane_sum(xr, xr, |v, _| (v - mean) * (v - mean)) / d as f32;
            let rstd = 1.0 / (var + eps).sqrt();
            *st = (mean, rstd);
            for (((o, v), g), b) in yr.iter_mut().zip(xr).zip(gamma).zip(beta) {
                *o = (v - mean) * rstd * g + b;
            }
        }
    }
}

multiversion! {
    /// dx rows from x and dy rows; each row's dy·x̂ and dy added into dgamma and dbeta.
    fn backward_rows(x: &[f32], dy: &[f32], dx: &mut [f32], d: usize, gamma: &[f32], stats: &[(f32, f32)], dgamma: &mut [f32], dbeta: &mut [f32]) {
        let inv_d = 1.0 / d as f32;
        for (((xr, dyr), dxr), &(mean, rstd)) in x.chunks_exact(d).zip(dy.chunks_exact(d)).zip(dx.chunks_exact_mut(d)).zip(stats) {
            // dx holds g = dy·γ for now.
            for ((o, dv), gm) in dxr.iter_mut().zip(dyr).zip(gamma) {
                *o = dv * gm;
            }
            let mg = lane_sum(dxr, dxr, |g, _| g) * inv_d;
            let mgx = lane_sum(dxr, xr, |g, v| g * (v - mean)) * rstd * inv_d;
            for ((((o, v), dv), dgm), dbt) in dxr.iter_mut().zip(xr).zip(dyr).zip(dgamma.iter_mut()).zip(dbeta.iter_mut()) {
                let xh = (v - mean) * rstd;
                *dgm += dv * xh;
                *dbt += dv;
                *o = rstd * (*o - mg - xh * mgx);
            }
        }
    }
}

/// (rows, d) of x, with gamma and beta of length d.
fn dims(x: &Layout, gamma: &Layout, beta: &Layout) -> Result<(usize, usize)> {
    let d = x.shape().dims().last().copied().unwrap_or(0);
    if gamma.shape().elem_count() != d || beta.shape().elem_count() != d {
        candle_core::bail!(
            "layer_norm: gamma and beta need {d} elements (the last dimension of {:?})",
            x.shape().dims()
        );
    }
    Ok((x.shape().elem_count() / d.max(1), d))
}

/// LayerNorm over the last dimension of x with affine (gamma, beta); keeps each row's mean and
/// rstd for the backward.
pub(crate) struct LayerNorm {
    eps: f32,
    stats: Mutex<Vec<(f32, f32)>>,
}

impl LayerNorm {
    pub(crate) fn new(eps: f64) -> Self {
        Self {
            eps: eps as f32,
            stats: Mutex::new(Vec::new()),
        }
    }
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "kernels-layer-norm"
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
        let (rows, d) = dims(l1, l2, l3)?;
        let x = slice(s1, l1, "layer_norm")?;
        let gamma = slice(s2, l2, "layer_norm")?;
        let beta = slice(s3, l3, "layer_norm")?;
        let mut y = uninit_vec(x.len());
        let mut stats = vec![(0f32, 0f32); rows];
        if d > 0 {
            let (yp, sp) = (SendPtr(y.as_mut_ptr()), SendPtr(stats.as_mut_ptr().cast()));
            super::util::par_for(rows.div_ceil(ROWS_PER_TASK), |t| {
                let r0 = t * ROWS_PER_TASK;
                let n = ROWS_PER_TASK.min(rows - r0);
                // SAFETY: task t owns rows r0..r0+n of y and of stats (pairs of f32).
                let (yr, st) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(yp.get().add(r0 * d), n * d),
                        std::slice::from_raw_parts_mut(sp.get().cast::<(f32, f32)>().add(r0), n),
                    )
                };
                forward_rows(&x[r0 * d..(r0 + n) * d], yr, d, gamma, beta, self.eps, st);
            });
        }
        *self.stats.lock().unwrap_or_else(|e| e.into_inner()) = stats;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, d) = dims(x.layout(), gamma.layout(), beta.layout())?;
        let dy = dy.contiguous()?;
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if stats.len() != rows {
            candle_core::bail!("layer_norm backward: forward statistics missing");
        }
        let mut dx = uninit_vec(rows * d);
        let dxp = SendPtr(dx.as_mut_ptr());
        // Per-thread (dγ | dβ) partials, summed in thread order (the same bits every run).
        let parts = with_slice(x, "layer_norm", |x| {
            with_slice(&dy, "layer_norm", |dy| {
                with_slice(gamma, "layer_norm", |gamma| {
                    par_fold(
                        if d == 0 {
                            0
                        } else {
                            rows.div_ceil(ROWS_PER_TASK)
                        },
                        || vec![0f32; 2 * d],
                        |acc, t| {
                            let r0 = t * ROWS_PER_TASK;
                            let n = ROWS_PER_TASK.min(rows - r0);
                            let (dg, db) = acc.split_at_mut(d);
                            // SAFETY: task t owns rows r0..r0+n of dx.
                            let dxr = unsafe {
                                std::slice::from_raw_parts_mut(dxp.get().add(r0 * d), n * d)
                            };
                            backward_rows(
                                &x[r0 * d..(r0 + n) * d],
                                &dy[r0 * d..(r0 + n) * d],
                                dxr,
                                d,
                                gamma,
                                &stats[r0..r0 + n],
                                dg,
                                db,
                            );
                        },
                    )
                })
            })
        })???;
        let mut sums = vec![0f32; 2 * d];
        for p in parts {
            for (s, v) in sums.iter_mut().zip(&p) {
                *s += *v;
            }
        }
        let dev = x.device();
        let dbeta = Tensor::from_vec(sums.split_off(d), beta.shape(), dev)?;
        let dgamma = Tensor::from_vec(sums, gamma.shape(), dev)?;
        let dx = Tensor::from_vec(dx, x.shape(), dev)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}
