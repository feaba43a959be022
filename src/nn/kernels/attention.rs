//! Softmax over the last dimension and scaled dot-product attention on the CPU in f32.
//!
//! Attention runs per batch item: P = softmax(scale · q kᵀ) with two sgemm calls around a
//! fused row softmax, keeping P for the backward, which is four more sgemm calls:
//! dV = Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP − rowsum(dP ⊙ P)) · scale, dQ = dS K, dK = dSᵀ Q.

use super::util::{
    SendPtr, fast_exp, multiversion, num_threads, par_chunks_mut, par_for, sgemm, slice,
    uninit_vec, with_scratch, with_slice,
};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::Mutex;

multiversion! {
    /// Softmax of each row of length `n`, in place.
    fn softmax_rows(x: &mut [f32], n: usize) {
        for row in x.chunks_exact_mut(n) {
            let mut mx = [f32::NEG_INFINITY; 16];
            let mut it = row.chunks_exact(16);
            for ch in &mut it {
                for (m, v) in mx.iter_mut().zip(ch) {
                    *m = m.max(*v);
                }
            }
            let mut m = f32::NEG_INFINITY;
            for v in it.remainder().iter().chain(mx.iter()) {
                m = m.max(*v);
            }
            if m == f32::NEG_INFINITY {
                m = 0.0;
            }
            // Sixteen partial sums, so the loop vectorises (a single f32 sum would not).
            let mut lanes = [0f32; 16];
            let mut it = row.chunks_exact_mut(16);
            for ch in &mut it {
                for (l, v) in lanes.iter_mut().zip(ch.iter_mut()) {
                    let e = fast_exp(*v - m);
                    *v = e;
                    *l += e;
                }
            }
            let mut s = 0f32;
            for v in it.into_remainder() {
                let e = fast_exp(*v - m);
                *v = e;
                s += e;
            }
            s += lanes.iter().sum::<f32>();
            let inv = 1.0 / s;
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

multiversion! {
    /// dx = y ⊙ (dy − rowsum(dy ⊙ y)) · scale for rows of length `n`, written over `dy`.
    fn softmax_bwd_rows(y: &[f32], dy: &mut [f32], n: usize, scale: f32) {
        for (yr, dr) in y.chunks_exact(n).zip(dy.chunks_exact_mut(n)) {
            let mut lanes = [0f32; 16];
            let mut yi = yr.chunks_exact(16);
            let mut di = dr.chunks_exact(16);
            for (a, b) in (&mut yi).zip(&mut di) {
                for ((l, u), v) in lanes.iter_mut().zip(a).zip(b) {
                    *l += u * v;
                }
            }
            let mut dot = 0f32;
            for (u, v) in yi.remainder().iter().zip(di.remainder()) {
                dot += u * v;
            }
            for l in lanes {
                dot += l;
            }
            for (d, u) in dr.iter_mut().zip(yr) {
                *d = u * (*d - dot) * scale;
            }
        }
    }
}

/// Rows of `n` handed to one pool task at least.
fn min_rows(n: usize) -> usize {
    (8192 / n.max(1)).max(1)
}

/// Softmax over the last dimension.
pub(crate) struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "kernels-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "softmax")?;
        let n = l.shape().dims().last().copied().unwrap_or(1);
        let mut y = x.to_vec();
        if n > 0 {
            par_chunks_mut(&mut y, n * min_rows(n), |_, c| softmax_rows(c, n));
        }
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dy = dy.contiguous()?;
        Ok(Some(res.apply_op2_no_bwd(&dy, &SoftmaxBwd)?))
    }
}

/// (y, dy) -> dx of the softmax (first-order only).
struct SoftmaxBwd;

impl CustomOp2 for SoftmaxBwd {
    fn name(&self) -> &'static str {
        "kernels-softmax-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = slice(s1, l1, "softmax")?;
        let mut dx = slice(s2, l2, "softmax")?.to_vec();
        let n = l1.shape().dims().last().copied().unwrap_or(1);
        if n > 0 {
            let k = min_rows(n);
            par_chunks_mut(&mut dx, n * k, |i, d| {
                softmax_bwd_rows(&y[i * n * k..i * n * k + d.len()], d, n, 1.0)
            });
        }
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// Shapes: q (N, T, D), k and v (N, S, D) after flattening leading dimensions.
#[derive(Clone, Copy, Debug)]
struct AttnDims {
    n: usize,
    t: usize,
    s: usize,
    d: usize,
}

fn attn_dims(q: &Shape, k: &Shape, v: &Shape) -> Result<AttnDims> {
    let (qd, kd, vd) = (q.dims(), k.dims(), v.dims());
    let r = qd.len();
    if r < 2 || kd.len() != r || vd != kd || qd[..r - 2] != kd[..r - 2] || qd[r - 1] != kd[r - 1] {
        candle_core::bail!("attention: shapes q {qd:?}, k {kd:?}, v {vd:?} do not fit");
    }
    Ok(AttnDims {
        n: qd[..r - 2].iter().product(),
        t: qd[r - 2],
        s: kd[r - 2],
        d: qd[r - 1],
    })
}

/// softmax(q kᵀ · scale) v; keeps P (N, T, S) for the backward.
pub(crate) struct Attention {
    pub scale: f32,
    probs: Mutex<Vec<f32>>,
}

impl Attention {
    pub(crate) fn new(scale: f32) -> Self {
        Self {
            scale,
            probs: Mutex::new(Vec::new()),
        }
    }
}

/// (units in parallel?, threads per GEMM)
fn split(n: usize) -> (bool, usize) {
    let nt = num_threads();
    if n >= nt { (true, 1) } else { (false, nt) }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "kernels-attention"
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
        let AttnDims { n, t, s, d } = attn_dims(l1.shape(), l2.shape(), l3.shape())?;
        let (q, k, v) = (
            slice(s1, l1, "attention")?,
            slice(s2, l2, "attention")?,
            slice(s3, l3, "attention")?,
        );
        let mut p = uninit_vec(n * t * s);
        let mut o = uninit_vec(n * t * d);
        let (par, gt) = split(n);
        let (pp, op) = (SendPtr(p.as_mut_ptr()), SendPtr(o.as_mut_ptr()));
        let scale = self.scale;
        let item = |b: usize| {
            // SAFETY: item b owns rows b·T.. of P and O.
            let pb = unsafe { std::slice::from_raw_parts_mut(pp.get().add(b * t * s), t * s) };
            let ob = unsafe { op.get().add(b * t * d) };
            let (qb, kb, vb) = (&q[b * t * d..], &k[b * s * d..], &v[b * s * d..]);
            // SAFETY: the matrices lie inside their slices with the strides given.
            unsafe {
                sgemm(
                    t,
                    s,
                    d,
                    pb.as_mut_ptr(),
                    s as isize,
                    1,
                    false,
                    qb.as_ptr(),
                    d as isize,
                    1,
                    kb.as_ptr(),
                    1,
                    d as isize,
                    scale,
                    gt,
                );
            }
            if s > 0 {
                softmax_rows(pb, s);
            }
            // SAFETY: as above.
            unsafe {
                sgemm(
                    t,
                    d,
                    s,
                    ob,
                    d as isize,
                    1,
                    false,
                    pb.as_ptr(),
                    s as isize,
                    1,
                    vb.as_ptr(),
                    d as isize,
                    1,
                    1.0,
                    gt,
                );
            }
        };
        if par {
            par_for(n, item);
        } else {
            (0..n).for_each(item);
        }
        *self.probs.lock().unwrap_or_else(|e| e.into_inner()) = p;
        Ok((CpuStorage::F32(o), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        dout: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let AttnDims { n, t, s, d } = attn_dims(q.shape(), k.shape(), v.shape())?;
        let dout = dout.contiguous()?;
        let p = self.probs.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() != n * t * s {
            candle_core::bail!("attention backward: forward probabilities missing");
        }
        // Gradients only for the inputs that carry a graph (a cross-attention over a fixed
        // context needs none for its keys and values).
        let (need_q, need_k, need_v) = (q.track_op(), k.track_op(), v.track_op());
        let buf = |need: bool, len: usize| if need { uninit_vec(len) } else { Vec::new() };
        let mut dq = buf(need_q, n * t * d);
        let mut dk = buf(need_k, n * s * d);
        let mut dv = buf(need_v, n * s * d);
        let (par, gt) = split(n);
        let (dqp, dkp, dvp) = (
            SendPtr(dq.as_mut_ptr()),
            SendPtr(dk.as_mut_ptr()),
            SendPtr(dv.as_mut_ptr()),
        );
        let scale = self.scale;
        with_slice(q, "attention", |q| {
            with_slice(k, "attention", |k| {
                with_slice(v, "attention", |v| {
                    with_slice(&dout, "attention", |dout| {
                        let item = |b: usize| {
                            let pb = &p[b * t * s..(b + 1) * t * s];
                            let (qb, kb, vb, gb) = (
                                &q[b * t * d..],
                                &k[b * s * d..],
                                &v[b * s * d..],
                                &dout[b * t * d..],
                            );
                            with_scratch([t * s, 0, 0], |ds, _, _| {
                                // SAFETY: item b owns its rows of dq, dk, dv (each allocated
                                // when needed); all matrices lie inside their slices with the
                                // strides given.
                                unsafe {
                                    // dV (S x D) = Pᵀ (S x T) · dO (T x D)
                                    if need_v {
                                        sgemm(
                                            s,
                                            d,
                                            t,
                                            dvp.get().add(b * s * d),
                                            d as isize,
                                            1,
                                            false,
                                            pb.as_ptr(),
                                            1,
                                            s as isize,
                                            gb.as_ptr(),
                                            d as isize,
                                            1,
                                            1.0,
                                            gt,
                                        );
                                    }
                                    // dP (T x S) = dO (T x D) · Vᵀ (D x S)
                                    sgemm(
                                        t,
                                        s,
                                        d,
                                        ds.as_mut_ptr(),
                                        s as isize,
                                        1,
                                        false,
                                        gb.as_ptr(),
                                        d as isize,
                                        1,
                                        vb.as_ptr(),
                                        1,
                                        d as isize,
                                        1.0,
                                        gt,
                                    );
                                }
                                if s > 0 {
                                    softmax_bwd_rows(pb, ds, s, scale);
                                }
                                // SAFETY: as above.
                                unsafe {
                                    // dQ (T x D) = dS (T x S) · K (S x D)
                                    if need_q {
                                        sgemm(
                                            t,
                                            d,
                                            s,
                                            dqp.get().add(b * t * d),
                                            d as isize,
                                            1,
                                            false,
                                            ds.as_ptr(),
                                            s as isize,
                                            1,
                                            kb.as_ptr(),
                                            d as isize,
                                            1,
                                            1.0,
                                            gt,
                                        );
                                    }
                                    // dK (S x D) = dSᵀ (S x T) · Q (T x D)
                                    if need_k {
                                        sgemm(
                                            s,
                                            d,
                                            t,
                                            dkp.get().add(b * s * d),
                                            d as isize,
                                            1,
                                            false,
                                            ds.as_ptr(),
                                            1,
                                            s as isize,
                                            qb.as_ptr(),
                                            d as isize,
                                            1,
                                            1.0,
                                            gt,
                                        );
                                    }
                                }
                            });
                        };
                        if par {
                            par_for(n, item);
                        } else {
                            (0..n).for_each(item);
                        }
                    })
                })
            })
        })????;
        let dev = q.device();
        let grad = |need: bool, g: Vec<f32>, like: &Tensor| {
            need.then(|| Tensor::from_vec(g, like.shape(), dev))
                .transpose()
        };
        Ok((
            grad(need_q, dq, q)?,
            grad(need_k, dk, k)?,
            grad(need_v, dv, v)?,
        ))
    }
}
