//! Stride-1 "same" convolutions on maps of at most 4 pixels (the 2x2 bottom of a UNet) as
//! per-tap GEMMs over whole channel vectors: with P = H·W, every output pixel p sees input
//! pixel q through one kernel tap t(p, q) = (qy - py + pad, qx - px + pad), so
//!
//!   y[:, :, p] = bias + Σ_q x[:, :, q] · W_t(p,q)        (B x Cin)·(Cin x Cout)
//!
//! with the map's pixels taken channels-last. P² multiply-adds per (co, ci) instead of
//! im2col's 9·P or Winograd F(2x2, 3x3)'s 16 per 2x2 tile plus its transforms, and only the
//! taps that meet the map are touched (4 of 9 per output pixel on a 2x2 map).

use super::conv::Geom;
use super::transpose::{transpose, transpose_into};
use super::util::{num_threads, sgemm, uninit_vec};

/// Whether a convolution takes this path: stride 1, output as large as the input, at most
/// four pixels, and a kernel with more taps than the map has pixels.
pub(crate) fn applies(g: &Geom) -> bool {
    let p = g.h * g.w;
    g.stride == 1 && g.oh == g.h && g.ow == g.w && p <= 4 && p < g.kh * g.kw
}

/// (output pixel p, input pixel q, tap index into kh·kw) for every tap that meets the map.
fn pairs(g: &Geom) -> Vec<(usize, usize, usize)> {
    let p = g.h * g.w;
    let tap = |po: usize, q: usize| {
        let (py, px, qy, qx) = (po / g.w, po % g.w, q / g.w, q % g.w);
        let ky = (qy + g.pad).checked_sub(py).filter(|&k| k < g.kh)?;
        let kx = (qx + g.pad).checked_sub(px).filter(|&k| k < g.kw)?;
        Some(ky * g.kw + kx)
    };
    (0..p)
        .flat_map(|po| (0..p).map(move |q| (po, q)))
        .filter_map(|(po, q)| tap(po, q).map(|t| (po, q, t)))
        .collect()
}

/// (B, C, P) <-> (B, P, C): each image's (C x P) block transposed.
fn swap_last(a: &[f32], b: usize, rows: usize, cols: usize) -> Vec<f32> {
    let n = rows * cols;
    let mut t = uninit_vec(b * n);
    for (src, dst) in a.chunks_exact(n).zip(t.chunks_exact_mut(n)) {
        for r in 0..rows {
            for c in 0..cols {
                dst[c * rows + r] = src[r * cols + c];
            }
        }
    }
    t
}

/// y (B, Cout, H, W) = conv(x, w) + bias.
pub(crate) fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &Geom) -> Vec<f32> {
    let (p, nt, cin, cout) = (g.h * g.w, g.kh * g.kw, g.cin, g.cout);
    let xs = swap_last(x, g.b, cin, p);
    // wt[(ci, t)][co]: tap t's (Cin x Cout) matrix has rows nt·Cout apart.
    let wt = transpose(w, cout, cin * nt);
    let mut ys = uninit_vec(g.b * p * cout);
    if let Some(bias) = bias {
        for px in ys.chunks_exact_mut(cout) {
            px.copy_from_slice(bias);
        }
    }
    let pairs = pairs(g);
    tap_products(
        &mut ys,
        cout,
        &xs,
        cin,
        &wt,
        g,
        bias.is_some(),
        pairs.into_iter(),
    );
    swap_last(&ys, g.b, p, cout)
}

/// dx (B, Cin, H, W): dx[:, :, q] = Σ_p dy[:, :, p] · W_t(p,q)ᵀ.
pub(crate) fn input_grad(dy: &[f32], w: &[f32], g: &Geom) -> Vec<f32> {
    let (p, nt, cin, cout) = (g.h * g.w, g.kh * g.kw, g.cin, g.cout);
    let dys = swap_last(dy, g.b, cout, p);
    // wi[co][(t, ci)]: tap t's (Cout x Cin) matrix has rows nt·Cin apart.
    let mut wi = uninit_vec(w.len());
    for (src, dst) in w.chunks_exact(cin * nt).zip(wi.chunks_exact_mut(cin * nt)) {
        transpose_into(src, cin, nt, dst);
    }
    let mut dxs = uninit_vec(g.b * p * cin);
    let swapped = pairs(g).into_iter().map(|(po, q, t)| (q, po, t));
    tap_products(&mut dxs, cin, &dys, cout, &wi, g, false, swapped);
    swap_last(&dxs, g.b, p, cin)
}

/// out[:, o, :] (+)= inp[:, i, :] · W_t for every (o, i, t) of `pairs`, channels-last, with
/// tap t's (in_c x out_c) matrix at w[t·out_c..] and its rows nt·out_c apart. The first
/// product into a pixel overwrites it unless `accumulate` (a bias is already there); every
/// pixel gets one, through the centre tap.
#[allow(clippy::too_many_arguments)]
fn tap_products(
    out: &mut [f32],
    out_c: usize,
    inp: &[f32],
    in_c: usize,
    w: &[f32],
    g: &Geom,
    accumulate: bool,
    pairs: impl Iterator<Item = (usize, usize, usize)>,
) {
    let (p, nt) = (g.h * g.w, g.kh * g.kw);
    let mut started = vec![accumulate; p];
    for (o, i, t) in pairs {
        // SAFETY: out[:, o, :] is B x out_c with rows P·out_c apart, inp[:, i, :] is B x in_c
        // with rows P·in_c apart, and tap t's matrix in_c x out_c with rows nt·out_c apart.
        unsafe {
            sgemm(
                g.b,
                out_c,
                in_c,
                out.as_mut_ptr().add(o * out_c),
                (p * out_c) as isize,
                1,
                started[o],
                inp.as_ptr().add(i * in_c),
                (p * in_c) as isize,
                1,
                w.as_ptr().add(t * out_c),
                (nt * out_c) as isize,
                1,
                1.0,
                num_threads(),
            )
        };
        started[o] = true;
    }
}

/// dw (Cout, Cin, kh, kw): tap t's (Cout x Cin) gradient is Σ over its pairs of
/// dy[:, :, p]ᵀ · x[:, :, q].
pub(crate) fn weight_grad(x: &[f32], dy: &[f32], g: &Geom) -> Vec<f32> {
    let (p, nt, cin, cout) = (g.h * g.w, g.kh * g.kw, g.cin, g.cout);
    let xs = swap_last(x, g.b, cin, p);
    let dys = swap_last(dy, g.b, cout, p);
    // per_tap[t][co][ci]
    let mut per_tap = vec![0f32; nt * cout * cin];
    let mut started = vec![false; nt];
    for (po, q, t) in pairs(g) {
        // SAFETY: per_tap's tap-t block is Cout x Cin; dys[:, po, :]ᵀ is Cout x B (columns
        // P·Cout apart); xs[:, q, :] is B x Cin with rows P·Cin apart.
        unsafe {
            sgemm(
                cout,
                cin,
                g.b,
                per_tap.as_mut_ptr().add(t * cout * cin),
                cin as isize,
                1,
                started[t],
                dys.as_ptr().add(po * cout),
                1,
                (p * cout) as isize,
                xs.as_ptr().add(q * cin),
                (p * cin) as isize,
                1,
                1.0,
                num_threads(),
            )
        };
        started[t] = true;
    }
    transpose(&per_tap, nt, cout * cin)
}
