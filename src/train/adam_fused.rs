//! One Adam update of an f32 parameter on the CPU in a single pass over memory (read p, g, m,
//! v; write p', m', v'), instead of a dozen candle elementwise ops that each allocate and
//! stream a parameter-sized tensor. Same arithmetic as the composed form, in f32.

use crate::nn::kernels::{multiversion, uninit_vec};

/// The scalars of one update: betas, eps, learning rate, bias corrections of this step,
/// decoupled weight decay and the gradient's clipping scale.
#[derive(Debug, Clone, Copy)]
pub struct Hyper {
    pub b1: f64,
    pub b2: f64,
    pub eps: f64,
    pub lr: f64,
    pub bc1: f64,
    pub bc2: f64,
    pub weight_decay: f64,
    pub grad_scale: f64,
}

/// (p', m', v') from parameter p, gradient g and the moments (None before the first step).
pub fn update(
    p: &[f32],
    g: &[f32],
    m: Option<&[f32]>,
    v: Option<&[f32]>,
    h: &Hyper,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let n = p.len();
    let zeros;
    let (m, v) = match (m, v) {
        (Some(m), Some(v)) => (m, v),
        _ => {
            zeros = vec![0f32; n];
            (&zeros[..], &zeros[..])
        }
    };
    let (mut p2, mut m2, mut v2) = (uninit_vec(n), uninit_vec(n), uninit_vec(n));
    kernel(p, g, m, v, &mut p2, &mut m2, &mut v2, h);
    (p2, m2, v2)
}

multiversion! {
    fn kernel(p: &[f32], g: &[f32], m: &[f32], v: &[f32], p2: &mut [f32], m2: &mut [f32], v2: &mut [f32], h: &Hyper) {
        let f = |x: f64| x as f32;
        let (scale, b1, c1, b2, c2) = (f(h.grad_scale), f(h.b1), f(1.0 - h.b1), f(h.b2), f(1.0 - h.b2));
        let (inv_sbc2, eps, step, keep) =
            (f(1.0 / h.bc2.sqrt()), f(h.eps), f(h.lr / h.bc1), f(1.0 - h.lr * h.weight_decay));
        let n = p.len();
        let (g, m, v, p2, m2, v2) = (&g[..n], &m[..n], &v[..n], &mut p2[..n], &mut m2[..n], &mut v2[..n]);
        for i in 0..n {
            let gi = g[i] * scale;
            let mi = b1 * m[i] + c1 * gi;
            let vi = b2 * v[i] + c2 * (gi * gi);
            m2[i] = mi;
            v2[i] = vi;
            p2[i] = keep * p[i] - step * (mi / (vi.sqrt() * inv_sbc2 + eps));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_formula_in_f64() {
        let n = 37;
        let p: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let g: Vec<f32> = (0..n).map(|i| (i as f32 * 0.71).cos() * 2.0).collect();
        let m: Vec<f32> = (0..n).map(|i| (i as f32 * 0.13).sin() * 0.1).collect();
        let v: Vec<f32> = (0..n)
            .map(|i| (i as f32 * 0.29).cos().abs() * 0.05)
            .collect();
        let h = Hyper {
            b1: 0.9,
            b2: 0.99,
            eps: 1e-8,
            lr: 0.01,
            bc1: 1.0 - 0.9f64.powi(3),
            bc2: 1.0 - 0.99f64.powi(3),
            weight_decay: 0.1,
            grad_scale: 0.5,
        };
        for first in [true, false] {
            let (p2, m2, v2) = if first {
                update(&p, &g, None, None, &h)
            } else {
                update(&p, &g, Some(&m), Some(&v), &h)
            };
            for i in 0..n {
                let (m0, v0) = if first {
                    (0.0, 0.0)
                } else {
                    (m[i] as f64, v[i] as f64)
                };
                let gi = g[i] as f64 * h.grad_scale;
                let mi = h.b1 * m0 + (1.0 - h.b1) * gi;
                let vi = h.b2 * v0 + (1.0 - h.b2) * gi * gi;
                let pi = p[i] as f64 * (1.0 - h.lr * h.weight_decay)
                    - h.lr / h.bc1 * mi / ((vi / h.bc2).sqrt() + h.eps);
                let close = |a: f32, b: f64| (a as f64 - b).abs() <= 1e-6 * (1.0 + b.abs());
                assert!(close(m2[i], mi), "m at {i}: {} vs {mi}", m2[i]);
                assert!(close(v2[i], vi), "v at {i}: {} vs {vi}", v2[i]);
                assert!(close(p2[i], pi), "p at {i}: {} vs {pi}", p2[i]);
            }
        }
    }
}
