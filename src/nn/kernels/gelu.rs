//! GELU in its exact form x·Φ(x) (Φ the normal CDF, through erf) and GEGLU, u·GELU(gate) over
//! the two halves of the last dimension, each one pass forward and one pass backward. candle
//! builds GELU's backward from about ten elementwise ops (erf, exp, squares, products, sums)
//! and GEGLU needs two strided halves, a product and its backward on top.
//!
//! Φ through a Chebyshev fit of erfc (relative error below 1.2e-7, tails included) and the
//! vectorising [`fast_exp`]; the backward is GELU'(x) = Φ(x) + x·φ(x). First order only (the
//! gradients carry no graph).

use super::util::{fast_exp, multiversion, par_chunks_mut, slice, uninit_vec};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

/// (Φ(x), φ(x)): the standard normal CDF and density at x.
#[inline(always)]
fn cdf_pdf(x: f32) -> (f32, f32) {
    // erfc(z) = t·exp(-z² + P(t)), t = 1 / (1 + z/2): Numerical Recipes' Chebyshev fit,
    // relative error below 1.2e-7 for every z >= 0, so the tails keep their precision.
    const C: [f32; 10] = [
        -1.265_512_2,
        1.000_023_7,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_204,
        1.488_515_9,
        -0.822_152_2,
        0.170_872_77,
    ];
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = C[9];
    for c in C[..9].iter().rev() {
        p = p * t + c;
    }
    // The upper tail 1 - Φ(|x|) = erfc(z) / 2; the lower one directly.
    let tail = 0.5 * t * fast_exp(p - z * z);
    let cdf = if x >= 0.0 { 1.0 - tail } else { tail };
    (cdf, fast_exp(-z * z) * INV_SQRT_2PI)
}

multiversion! {
    /// y = x·Φ(x)
    fn gelu_fwd(x: &[f32], y: &mut [f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x * cdf_pdf(x).0;
        }
    }
}

multiversion! {
    /// dx = dy·(Φ(x) + x·φ(x)), written over dy.
    fn gelu_bwd(x: &[f32], dy: &mut [f32]) {
        for (d, &x) in dy.iter_mut().zip(x) {
            let (c, p) = cdf_pdf(x);
            *d *= c + x * p;
        }
    }
}

multiversion! {
    /// Rows of f = [u | gate] (2n each) to rows of y = u·GELU(gate) (n each).
    fn geglu_fwd(f: &[f32], y: &mut [f32], n: usize) {
        for (fr, yr) in f.chunks_exact(2 * n).zip(y.chunks_exact_mut(n)) {
            let (u, g) = fr.split_at(n);
            for ((y, &u), &g) in yr.iter_mut().zip(u).zip(g) {
                *y = u * g * cdf_pdf(g).0;
            }
        }
    }
}

multiversion! {
    /// df = [dy·GELU(gate) | dy·u·GELU'(gate)] row by row.
    fn geglu_bwd(f: &[f32], dy: &[f32], df: &mut [f32], n: usize) {
        for ((fr, dr), out) in f.chunks_exact(2 * n).zip(dy.chunks_exact(n)).zip(df.chunks_exact_mut(2 * n)) {
            let (u, g) = fr.split_at(n);
            let (du, dg) = out.split_at_mut(n);
            for i in 0..n {
                let (c, p) = cdf_pdf(g[i]);
                du[i] = dr[i] * g[i] * c;
                dg[i] = dr[i] * u[i] * (c + g[i] * p);
            }
        }
    }
}

/// Elements handed to one pool task at least.
const MIN_CHUNK: usize = 1 << 14;

/// Whole rows of `row` elements per pool task.
fn rows_per_task(row: usize) -> usize {
    MIN_CHUNK.div_ceil(row.max(1))
}

/// GELU, exact form.
pub(crate) struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "kernels-gelu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "gelu")?;
        let mut y = uninit_vec(x.len());
        par_chunks_mut(&mut y, MIN_CHUNK, |i, c| {
            gelu_fwd(&x[i * MIN_CHUNK..i * MIN_CHUNK + c.len()], c)
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &GeluBwd)?))
    }
}

/// (x, dy) -> dx of GELU.
struct GeluBwd;

impl CustomOp2 for GeluBwd {
    fn name(&self) -> &'static str {
        "kernels-gelu-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = slice(s1, l1, "gelu")?;
        let mut dx = slice(s2, l2, "gelu")?.to_vec();
        par_chunks_mut(&mut dx, MIN_CHUNK, |i, d| {
            gelu_bwd(&x[i * MIN_CHUNK..i * MIN_CHUNK + d.len()], d)
        });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// The last dimension's length, which must be even.
fn halves(l: &Layout) -> Result<usize> {
    let last = l.shape().dims().last().copied().unwrap_or(0);
    if last % 2 != 0 {
        candle_core::bail!("geglu: the last dimension ({last}) must split into two halves");
    }
    Ok(last / 2)
}

/// u·GELU(gate) for [u | gate] along the last dimension.
pub(crate) struct Geglu;

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "kernels-geglu"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let f = slice(s, l, "geglu")?;
        let n = halves(l)?;
        let mut y = uninit_vec(f.len() / 2);
        let mut dims = l.shape().dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = n;
        }
        if n > 0 {
            let k = rows_per_task(n);
            par_chunks_mut(&mut y, n * k, |i, c| {
                geglu_fwd(&f[i * 2 * n * k..i * 2 * n * k + 2 * c.len()], c, n)
            });
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
    }
    fn bwd(&self, f: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(f.apply_op2_no_bwd(&dy.contiguous()?, &GegluBwd)?))
    }
}

/// (f, dy) -> df of GEGLU.
struct GegluBwd;

impl CustomOp2 for GegluBwd {
    fn name(&self) -> &'static str {
        "kernels-geglu-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let f = slice(s1, l1, "geglu")?;
        let dy = slice(s2, l2, "geglu")?;
        let n = halves(l1)?;
        let mut df = uninit_vec(f.len());
        if n > 0 {
            let k = rows_per_task(n);
            par_chunks_mut(&mut df, 2 * n * k, |i, d| {
                let (a, b) = (i * 2 * n * k, i * n * k);
                geglu_bwd(&f[a..a + d.len()], &dy[b..b + d.len() / 2], d, n)
            });
        }
        Ok((CpuStorage::F32(df), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_and_pdf_match_their_definitions() {
        // Φ(x) against erf from the series Σ (-1)^k x^(2k+1) / (k! (2k+1)) in f64.
        let erf = |x: f64| {
            let (mut term, mut sum) = (x, x);
            for k in 1..200 {
                term *= -x * x / k as f64;
                sum += term / (2 * k + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        };
        for i in -40..=40 {
            let x = i as f64 * 0.1;
            let (c, p) = cdf_pdf(x as f32);
            let want_c = 0.5 * (1.0 + erf(x / std::f64::consts::SQRT_2));
            let want_p = (-x * x / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            // The lower tail, where Φ is small, to relative precision; the rest absolutely.
            let err = (c as f64 - want_c).abs();
            let ok = if x < 0.0 {
                err < 2e-6 * want_c
            } else {
                err < 2e-7
            };
            assert!(ok, "cdf({x}): {c} vs {want_c}");
            assert!(
                (p as f64 - want_p).abs() < 1e-7,
                "pdf({x}): {p} vs {want_p}"
            );
        }
    }
}
