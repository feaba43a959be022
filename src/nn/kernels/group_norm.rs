//! Fused GroupNorm (+ optional SiLU) on the CPU in f32, forward and backward.
//!
//! With x laid out (B, C, S) the channels of one group are one contiguous block of
//! (C/G)·S floats, so each (batch, group) block is one task. The forward takes the mean and
//! the variance in two passes over the block (it is small enough to stay in cache), summing
//! f32 lanes over short runs into f64, then writes y in a third fused pass. The backward takes
//! two passes: per-channel sums of dŷ and dŷ·x̂ (dŷ stored in dx), then dx in place.

use super::util::{
    SendPtr, fast_sigmoid, multiversion, par_chunks_mut, slice, uninit_vec, with_slice,
};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

/// Floats summed in f32 lanes before being added into an f64 total.
const RUN: usize = 256;

/// Sums of a slice, and of its squares around `shift`, accumulated as above.
#[inline(always)]
fn sum_f64(v: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0f64;
    for run in v.chunks(RUN) {
        let mut lanes = [0f32; 16];
        let mut it = run.chunks_exact(16);
        for ch in &mut it {
            for (l, x) in lanes.iter_mut().zip(ch) {
                *l += f(*x);
            }
        }
        let mut s = 0f32;
        for x in it.remainder() {
            s += f(*x);
        }
        for l in lanes {
            s += l;
        }
        total += s as f64;
    }
    total
}

/// Σ (x - m) and Σ (x - m)² over a slice, accumulated as in [`sum_f64`].
#[inline(always)]
fn centered_sums(v: &[f32], m: f32) -> (f64, f64) {
    let (mut t1, mut t2) = (0f64, 0f64);
    for run in v.chunks(RUN) {
        let mut l1 = [0f32; 16];
        let mut l2 = [0f32; 16];
        let mut it = run.chunks_exact(16);
        for ch in &mut it {
            for ((a, b), x) in l1.iter_mut().zip(l2.iter_mut()).zip(ch) {
                let d = *x - m;
                *a += d;
                *b += d * d;
            }
        }
        let (mut s1, mut s2) = (0f32, 0f32);
        for x in it.remainder() {
            let d = *x - m;
            s1 += d;
            s2 += d * d;
        }
        for (a, b) in l1.iter().zip(&l2) {
            s1 += a;
            s2 += b;
        }
        t1 += s1 as f64;
        t2 += s2 as f64;
    }
    (t1, t2)
}

multiversion! {
    /// Mean and 1/sqrt(var + eps) of one block: a first pass for the mean, a second for the
    /// variance around it, corrected for the rounding of the mean to f32.
    fn block_stats(v: &[f32], eps: f64) -> (f32, f32) {
        let n = v.len().max(1) as f64;
        let m = (sum_f64(v, |x| x) / n) as f32;
        let (s1, s2) = centered_sums(v, m);
        let d = s1 / n;
        let var = (s2 / n - d * d).max(0.0);
        ((m as f64 + d) as f32, (1.0 / (var + eps).sqrt()) as f32)
    }
}

multiversion! {
    /// y = x·a + b per channel, then SiLU if asked, for one block of `cpg` channels.
    fn block_forward(x: &[f32], y: &mut [f32], s: usize, a: &[f32], b: &[f32], silu: bool) {
        for (c, (xr, yr)) in x.chunks_exact(s).zip(y.chunks_exact_mut(s)).enumerate() {
            let (ac, bc) = (a[c], b[c]);
            if silu {
                for (o, v) in yr.iter_mut().zip(xr) {
                    let t = v * ac + bc;
                    *o = t * fast_sigmoid(t);
                }
            } else {
                for (o, v) in yr.iter_mut().zip(xr) {
                    *o = v * ac + bc;
                }
            }
        }
    }
}

multiversion! {
    /// Backward of one block. Writes dx and the per-channel (Σ dŷ, Σ dŷ·x̂) of this batch item.
    fn block_backward(
        x: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        s: usize,
        mean: f32,
        rstd: f32,
        gamma: &[f32],
        beta: &[f32],
        silu: bool,
        dbeta: &mut [f32],
        dgamma: &mut [f32],
    ) {
        let cpg = gamma.len();
        let n = (cpg * s) as f64;
        let (mut m1, mut m2) = (0f64, 0f64);
        for c in 0..cpg {
            let xr = &x[c * s..(c + 1) * s];
            let dyr = &dy[c * s..(c + 1) * s];
            let dxr = &mut dx[c * s..(c + 1) * s];
            let (gc, bc) = (gamma[c], beta[c]);
            if silu {
                for ((o, v), d) in dxr.iter_mut().zip(xr).zip(dyr) {
                    let xh = (v - mean) * rstd;
                    let t = xh * gc + bc;
                    let sg = fast_sigmoid(t);
                    *o = d * sg * (1.0 + t * (1.0 - sg));
                }
            }
            // dŷ: the SiLU-scaled gradient just stored in dx, or dy itself.
            let dsrc: &[f32] = if silu { dxr } else { dyr };
            // Σ dŷ and Σ dŷ·x̂ = rstd · Σ dŷ·(x - mean), in one pass.
            let (mut sd, mut sdx) = (0f64, 0f64);
            for (xrun, drun) in xr.chunks(RUN).zip(dsrc.chunks(RUN)) {
                let mut l1 = [0f32; 16];
                let mut l2 = [0f32; 16];
                let mut xi = xrun.chunks_exact(16);
                let mut di = drun.chunks_exact(16);
                for (xc, dc) in (&mut xi).zip(&mut di) {
                    for (((a, b), v), d) in l1.iter_mut().zip(l2.iter_mut()).zip(xc).zip(dc) {
                        *a += d;
                        *b += (v - mean) * d;
                    }
                }
                let (mut s1, mut s2) = (0f32, 0f32);
                for (v, d) in xi.remainder().iter().zip(di.remainder()) {
                    s1 += d;
                    s2 += (v - mean) * d;
                }
                for (a, b) in l1.iter().zip(&l2) {
                    s1 += a;
                    s2 += b;
                }
                sd += s1 as f64;
                sdx += s2 as f64;
            }
            let sdx = sdx * rstd as f64;
            dbeta[c] = sd as f32;
            dgamma[c] = sdx as f32;
            m1 += gc as f64 * sd;
            m2 += gc as f64 * sdx;
        }
        let (m1, m2) = ((m1 / n) as f32, (m2 / n) as f32);
        for c in 0..cpg {
            let xr = &x[c * s..(c + 1) * s];
            let dxr = &mut dx[c * s..(c + 1) * s];
            let k = gamma[c] * rstd;
            // dx = rstd·(γ·dŷ - m1 - x̂·m2), x̂ = (x - mean)·rstd
            let c0 = -rstd * m1 + mean * rstd * rstd * m2;
            let c1 = -rstd * rstd * m2;
            if silu {
                for (o, v) in dxr.iter_mut().zip(xr) {
                    *o = *o * k + c0 + v * c1;
                }
            } else {
                for ((o, v), d) in dxr.iter_mut().zip(xr).zip(&dy[c * s..(c + 1) * s]) {
                    *o = d * k + c0 + v * c1;
                }
            }
        }
    }
}

fn check(
    x: &Layout,
    gamma: &Layout,
    beta: &Layout,
    groups: usize,
) -> Result<(usize, usize, usize)> {
    let dims = x.shape().dims();
    if dims.len() < 2 {
        candle_core::bail!("group_norm: expected (B, C, ...), got {:?}", dims);
    }
    let (b, c) = (dims[0], dims[1]);
    let s: usize = dims[2..].iter().product();
    if groups == 0 || c % groups != 0 {
        candle_core::bail!("group_norm: {c} channels do not split into {groups} groups");
    }
    if gamma.shape().elem_count() != c || beta.shape().elem_count() != c {
        candle_core::bail!("group_norm: gamma and beta need {c} elements");
    }
    Ok((b, c, s))
}

/// GroupNorm(+SiLU) over (x, gamma, beta); keeps the per-(b, g) mean and rstd for backward.
pub(crate) struct GroupNorm {
    pub groups: usize,
    pub eps: f64,
    pub silu: bool,
    stats: Mutex<Vec<(f32, f32)>>,
}

impl GroupNorm {
    pub(crate) fn new(groups: usize, eps: f64, silu: bool) -> Self {
        Self {
            groups,
            eps,
            silu,
            stats: Mutex::new(Vec::new()),
        }
    }
}

impl CustomOp3 for GroupNorm {
    fn name(&self) -> &'static str {
        "kernels-group-norm"
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
        let (b, c, s) = check(l1, l2, l3, self.groups)?;
        let x = slice(s1, l1, "group_norm")?;
        let gamma = slice(s2, l2, "group_norm")?;
        let beta = slice(s3, l3, "group_norm")?;
        let cpg = c / self.groups;
        let blk = cpg * s;
        let mut y = uninit_vec(x.len());
        let mut stats = vec![(0f32, 0f32); b * self.groups];
        if blk > 0 {
            let sp = SendPtr(stats.as_mut_ptr().cast());
            par_chunks_mut(&mut y, blk, |i, yb| {
                let xb = &x[i * blk..(i + 1) * blk];
                let g = i % self.groups;
                let (mean, rstd) = block_stats(xb, self.eps);
                // SAFETY: block i owns stats[i] (a pair of f32).
                unsafe { *sp.get().cast::<(f32, f32)>().add(i) = (mean, rstd) };
                let mut a = [0f32; 64];
                let mut bb = [0f32; 64];
                // Channels in chunks of 64 so the coefficients live on the stack.
                for c0 in (0..cpg).step_by(64) {
                    let n = (cpg - c0).min(64);
                    for j in 0..n {
                        let ch = g * cpg + c0 + j;
                        a[j] = gamma[ch] * rstd;
                        bb[j] = beta[ch] - mean * a[j];
                    }
                    block_forward(
                        &xb[c0 * s..(c0 + n) * s],
                        &mut yb[c0 * s..(c0 + n) * s],
                        s,
                        &a[..n],
                        &bb[..n],
                        self.silu,
                    );
                }
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
        let (b, c, s) = check(x.layout(), gamma.layout(), beta.layout(), self.groups)?;
        let cpg = c / self.groups;
        let blk = cpg * s;
        let dy = dy.contiguous()?;
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if stats.len() != b * self.groups {
            candle_core::bail!("group_norm backward: forward statistics missing");
        }
        let mut dx = uninit_vec(b * c * s);
        let mut dgb = vec![0f32; 2 * b * c]; // [dbeta (B, C) | dgamma (B, C)]
        with_slice(x, "group_norm", |x| {
            with_slice(&dy, "group_norm", |dy| {
                with_slice(gamma, "group_norm", |gamma| {
                    with_slice(beta, "group_norm", |beta| {
                        let (dbeta, dgamma) = dgb.split_at_mut(b * c);
                        let dbp = SendPtr(dbeta.as_mut_ptr());
                        let dgp = SendPtr(dgamma.as_mut_ptr());
                        if blk == 0 {
                            return;
                        }
                        par_chunks_mut(&mut dx, blk, |i, dxb| {
                            let g = i % self.groups;
                            let ch = g * cpg..(g + 1) * cpg;
                            // SAFETY: block i owns entries i·cpg..(i+1)·cpg of both (B, C) arrays.
                            let (db, dg) = unsafe {
                                (
                                    std::slice::from_raw_parts_mut(dbp.get().add(i * cpg), cpg),
                                    std::slice::from_raw_parts_mut(dgp.get().add(i * cpg), cpg),
                                )
                            };
                            let (mean, rstd) = stats[i];
                            block_backward(
                                &x[i * blk..(i + 1) * blk],
                                &dy[i * blk..(i + 1) * blk],
                                dxb,
                                s,
                                mean,
                                rstd,
                                &gamma[ch.clone()],
                                &beta[ch],
                                self.silu,
                                db,
                                dg,
                            );
                        });
                    })
                })
            })
        })????;
        let mut dbeta = vec![0f32; c];
        let mut dgamma = vec![0f32; c];
        for bi in 0..b {
            for ci in 0..c {
                dbeta[ci] += dgb[bi * c + ci];
                dgamma[ci] += dgb[b * c + bi * c + ci];
            }
        }
        let dev = x.device();
        let dx = Tensor::from_vec(dx, x.shape(), dev)?;
        let dgamma = Tensor::from_vec(dgamma, gamma.shape(), dev)?;
        let dbeta = Tensor::from_vec(dbeta, beta.shape(), dev)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}
