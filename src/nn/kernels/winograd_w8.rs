//! The Winograd F(2x2, 3x3) transforms for maps exactly 8 pixels wide (the latent UNets' top
//! level: 4 tiles a row), in AVX2 registers: a map row is one 8-lane vector, its even and odd
//! columns one permute away, so a tile row of all three transforms is a few dozen
//! instructions with no round trips through memory. Same layouts and arithmetic as the
//! generic transforms in `winograd.rs`; the tests check both against direct loops.

use std::arch::x86_64::*;

use super::conv::Geom;
use super::winograd::{images, xi_stride};

/// Whether these transforms take a map: 8 wide, with the kernels on AVX2 or above.
pub(crate) fn applies(g: &Geom) -> bool {
    g.w == 8 && crate::nn::cpu::isa() >= crate::nn::cpu::Isa::Avx2
}

/// Row yy of the plane at `p` (8 floats), or zeros outside 0..h.
#[target_feature(enable = "avx2")]
unsafe fn row(p: &[f32], yy: usize, h: usize) -> __m256 {
    if yy < h {
        let r = &p[yy * 8..yy * 8 + 8];
        // SAFETY: r holds 8 floats.
        unsafe { _mm256_loadu_ps(r.as_ptr()) }
    } else {
        _mm256_setzero_ps()
    }
}

/// (even columns, odd columns, odd columns shifted right by one with a zero in front, even
/// columns shifted left by one with a zero behind) of an 8-lane row.
#[target_feature(enable = "avx2")]
fn split(r: __m256) -> (__m128, __m128, __m128, __m128) {
    let eo = _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    let sh = _mm256_permutevar8x32_ps(r, _mm256_setr_epi32(0, 1, 3, 5, 2, 4, 6, 0));
    let z = _mm_setzero_ps();
    let o_prev = _mm_blend_ps::<0b0001>(_mm256_castps256_ps128(sh), z);
    let e_next = _mm_blend_ps::<0b1000>(_mm256_extractf128_ps::<1>(sh), z);
    (
        _mm256_castps256_ps128(eo),
        _mm256_extractf128_ps::<1>(eo),
        o_prev,
        e_next,
    )
}

/// V[ξ][ci][i] = (Bᵀ d B)[ξ] for the tile rows r0..r0+nr, as `winograd::input_transform`.
///
/// # Safety
/// The CPU has AVX2 ([`applies`]); v holds 16 · xi_stride(Cin, nr · 4) floats.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn input_transform(
    x: &[f32],
    g: &Geom,
    th: usize,
    r0: usize,
    nr: usize,
    v: &mut [f32],
) {
    let (h, cin) = (g.h, g.cin);
    let n = nr * 4;
    let stride_xi = xi_stride(cin, n);
    for (b, rows, ty0) in images(r0, nr, th) {
        for ci in 0..cin {
            let plane = &x[(b * cin + ci) * h * 8..(b * cin + ci + 1) * h * 8];
            for (rr, ty) in rows.clone().zip(ty0..) {
                // SAFETY: AVX2 is enabled for this function.
                let d = unsafe {
                    let at = |k: usize| (2 * ty + k).wrapping_sub(1);
                    [
                        row(plane, at(0), h),
                        row(plane, at(1), h),
                        row(plane, at(2), h),
                        row(plane, at(3), h),
                    ]
                };
                // Bᵀ over the rows: [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
                let rows = [
                    _mm256_sub_ps(d[0], d[2]),
                    _mm256_add_ps(d[1], d[2]),
                    _mm256_sub_ps(d[2], d[1]),
                    _mm256_sub_ps(d[1], d[3]),
                ];
                let base = ci * n + rr * 4;
                for (k, &r) in rows.iter().enumerate() {
                    let (e, o, o_prev, e_next) = split(r);
                    let out = [
                        _mm_sub_ps(o_prev, o),
                        _mm_add_ps(e, o),
                        _mm_sub_ps(o, e),
                        _mm_sub_ps(e, e_next),
                    ];
                    for (c, val) in out.into_iter().enumerate() {
                        let at = (k * 4 + c) * stride_xi + base;
                        let dst = &mut v[at..at + 4];
                        // SAFETY: dst holds 4 floats.
                        unsafe { _mm_storeu_ps(dst.as_mut_ptr(), val) };
                    }
                }
            }
        }
    }
}

/// y from M[ξ][co][i] for the tile rows r0..r0+nr, as `winograd::output_transform`.
///
/// # Safety
/// The CPU has AVX2 ([`applies`]); y is the (B, Cout, H, 8) output, of which this call writes
/// only the rows of its tiles.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn output_transform(
    m: &[f32],
    g: &Geom,
    th: usize,
    r0: usize,
    nr: usize,
    bias: Option<&[f32]>,
    y: *mut f32,
) {
    let (h, cout) = (g.h, g.cout);
    let n = nr * 4;
    let stride_xi = xi_stride(cout, n);
    for (b, rows, ty0) in images(r0, nr, th) {
        for co in 0..cout {
            let bv = _mm_set1_ps(bias.map_or(0.0, |b| b[co]));
            for (rr, ty) in rows.clone().zip(ty0..) {
                let base = co * n + rr * 4;
                let mut mv = [_mm_setzero_ps(); 16];
                for (xi, slot) in mv.iter_mut().enumerate() {
                    let src = &m[xi * stride_xi + base..xi * stride_xi + base + 4];
                    // SAFETY: src holds 4 floats.
                    *slot = unsafe { _mm_loadu_ps(src.as_ptr()) };
                }
                // Aᵀ over the rows (per column c): row 0 = m0 + m1 + m2, row 1 = m1 - m2 - m3.
                let mut s = [[_mm_setzero_ps(); 4]; 2];
                for c in 0..4 {
                    let (m0, m1, m2, m3) = (mv[c], mv[4 + c], mv[8 + c], mv[12 + c]);
                    s[0][c] = _mm_add_ps(_mm_add_ps(m0, m1), m2);
                    s[1][c] = _mm_sub_ps(_mm_sub_ps(m1, m2), m3);
                }
                for (i, si) in s.iter().enumerate() {
                    let yy = 2 * ty + i;
                    if yy >= h {
                        continue;
                    }
                    let even = _mm_add_ps(_mm_add_ps(_mm_add_ps(si[0], si[1]), si[2]), bv);
                    let odd = _mm_add_ps(_mm_sub_ps(_mm_sub_ps(si[1], si[2]), si[3]), bv);
                    // SAFETY: row (b, co, yy) of y, 8 floats; units cover disjoint tile rows.
                    unsafe {
                        let dst = y.add(((b * cout + co) * h + yy) * 8);
                        _mm_storeu_ps(dst, _mm_unpacklo_ps(even, odd));
                        _mm_storeu_ps(dst.add(4), _mm_unpackhi_ps(even, odd));
                    }
                }
            }
        }
    }
}

/// Mg[ξ][co][i] = (A dY Aᵀ)[ξ] for the tile rows r0..r0+nr, as `winograd::grad_transform`.
///
/// # Safety
/// The CPU has AVX2 ([`applies`]); mg holds 16 · xi_stride(Cout, nr · 4) floats.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn grad_transform(
    dy: &[f32],
    g: &Geom,
    th: usize,
    r0: usize,
    nr: usize,
    mg: &mut [f32],
) {
    let (h, cout) = (g.h, g.cout);
    let n = nr * 4;
    let stride_xi = xi_stride(cout, n);
    for (b, rows, ty0) in images(r0, nr, th) {
        for co in 0..cout {
            let plane = &dy[(b * cout + co) * h * 8..(b * cout + co + 1) * h * 8];
            for (rr, ty) in rows.clone().zip(ty0..) {
                // SAFETY: AVX2 is enabled for this function.
                let (e0, e1) = unsafe { (row(plane, 2 * ty, h), row(plane, 2 * ty + 1, h)) };
                // A over the two rows: [e0, e0 + e1, e0 - e1, -e1], then A over the columns.
                let z = _mm256_setzero_ps();
                let q = [
                    e0,
                    _mm256_add_ps(e0, e1),
                    _mm256_sub_ps(e0, e1),
                    _mm256_sub_ps(z, e1),
                ];
                let base = co * n + rr * 4;
                for (k, &qk) in q.iter().enumerate() {
                    let eo =
                        _mm256_permutevar8x32_ps(qk, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
                    let (qe, qo) = (_mm256_castps256_ps128(eo), _mm256_extractf128_ps::<1>(eo));
                    let out = [
                        qe,
                        _mm_add_ps(qe, qo),
                        _mm_sub_ps(qe, qo),
                        _mm_sub_ps(_mm_setzero_ps(), qo),
                    ];
                    for (c, val) in out.into_iter().enumerate() {
                        let at = (k * 4 + c) * stride_xi + base;
                        let dst = &mut mg[at..at + 4];
                        // SAFETY: dst holds 4 floats.
                        unsafe { _mm_storeu_ps(dst.as_mut_ptr(), val) };
                    }
                }
            }
        }
    }
}
