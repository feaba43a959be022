//! Winograd F(2x2, 3x3) for stride-1, padding-1 3x3 convolutions with enough channels: the
//! output is cut into 2x2 tiles, each tile's 4x4 input patch and the 3x3 kernels are taken to
//! a 4x4 transform domain, where the convolution becomes 16 independent GEMMs
//! (Cout x Cin)·(Cin x tiles) with 2.25x fewer multiply-adds than im2col, and no padding work.
//!
//! Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A; the weight gradient is Gᵀ[Σ_tiles (A dY Aᵀ) ⊙ (Bᵀ d B)]G,
//! and the input gradient is the same forward with the kernels flipped and transposed.

use super::conv::Geom;
use super::util::{
    SendPtr, multiversion, num_threads, par_fold, par_for, sgemm, uninit_vec, with_scratch,
};
#[cfg(target_arch = "x86_64")]
use super::winograd_w8;

/// Whether a convolution takes this path (LDM_KERNELS_NO_WINOGRAD=1 turns it off, to compare).
pub(crate) fn applies(g: &Geom) -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let off = *OFF.get_or_init(|| std::env::var("LDM_KERNELS_NO_WINOGRAD").is_ok_and(|v| v != "0"));
    !off && g.kh == 3
        && g.kw == 3
        && g.stride == 1
        && g.pad == 1
        && g.w <= 2 * MAX_TW
        && g.cin >= 32
        && g.cout >= 32
}

struct Tiles {
    th: usize,
    tw: usize,
    /// tile rows (b, ty) in all
    rows: usize,
    /// tile rows per work unit
    per: usize,
    units: usize,
}

fn tiles(g: &Geom) -> Tiles {
    let (th, tw) = (g.h.div_ceil(2), g.w.div_ceil(2));
    let rows = g.b * th;
    let nt = num_threads();
    // A unit's transformed input and product (16·(Cin + Cout) floats a tile) stay within
    // about 1 MiB, the L2 cache of one core: measured 3-5% faster UNet train steps than 4 MiB.
    let per_tiles = (16_384 / (g.cin + g.cout)).clamp(32, 512);
    let per = (per_tiles / tw).clamp(1, rows.div_ceil(nt).max(1));
    Tiles {
        th,
        tw,
        rows,
        per,
        units: rows.div_ceil(per),
    }
}

/// Distance between the 16 transform-domain matrices (each c x n) in a unit's scratch: one
/// cache line more than they need, so the 16 streams a transform reads or writes do not all
/// map to the same L1 sets (c·n is often a multiple of 4 KiB).
pub(crate) fn xi_stride(c: usize, n: usize) -> usize {
    c * n + 16
}

/// The tile rows r0..r0+nr (numbered image by image, th to an image) grouped by image:
/// (image b, the unit's row indices rr in it, the first one's tile row ty in the image). The
/// transforms loop image, then channel, then rows, so they stream through each image's
/// channel planes in memory order.
pub(crate) fn images(
    r0: usize,
    nr: usize,
    th: usize,
) -> impl Iterator<Item = (usize, std::ops::Range<usize>, usize)> {
    let mut rr = 0;
    std::iter::from_fn(move || {
        (rr < nr).then(|| {
            let (b, ty0) = ((r0 + rr) / th, (r0 + rr) % th);
            let len = (th - ty0).min(nr - rr);
            let item = (b, rr..rr + len, ty0);
            rr += len;
            item
        })
    })
}

/// [`input_transform`] with the tile-row width `tw` fixed at compile time when `TW` > 0 (the
/// 2- to 16-tile rows of 4x4 to 32x32 maps then unroll and vectorise).
///
/// Each input row is split into its even and odd columns (xe[j] = x[2j], xo[j] = x[2j + 1]);
/// Bᵀ over the tile's four rows acts on those halves alike, and Bᵀ over the columns of tile
/// tx (padded columns 2tx - 1 ..= 2tx + 2, that is xo[tx - 1], xe[tx], xo[tx], xe[tx + 1]) is
/// then four differences of neighbouring lanes.
///
/// `L` (> tw) sizes the lane arrays: TW + 1 when TW is fixed, so they live in registers.
#[inline(always)]
fn input_transform_at<const TW: usize, const L: usize>(
    x: &[f32],
    g: &Geom,
    th: usize,
    tw: usize,
    r0: usize,
    nr: usize,
    v: &mut [f32],
) {
    let tw = if TW == 0 { tw } else { TW };
    let (h, w, cin) = (g.h, g.w, g.cin);
    let n = nr * tw;
    let stride_xi = xi_stride(cin, n);
    // Lane tw of xe stays zero: the padding right of the map.
    let mut xe = [[0f32; L]; 4];
    let mut xo = [[0f32; L]; 4];
    let (mut d_e, mut d_o) = ([[0f32; L]; 4], [[0f32; L]; 4]);
    let odd = w % 2 == 1;
    for (b, rows, ty0) in images(r0, nr, th) {
        for ci in 0..cin {
            let plane = &x[(b * cin + ci) * h * w..(b * cin + ci + 1) * h * w];
            for (rr, ty) in rows.clone().zip(ty0..) {
                for k in 0..4 {
                    let yy = (2 * ty + k).wrapping_sub(1);
                    let (de, dov) = (&mut d_e[k][..tw], &mut d_o[k][..tw]);
                    if yy < h {
                        let row = &plane[yy * w..(yy + 1) * w];
                        for j in 0..tw - usize::from(odd) {
                            de[j] = row[2 * j];
                            dov[j] = row[2 * j + 1];
                        }
                        if odd {
                            de[tw - 1] = row[2 * tw - 2];
                            dov[tw - 1] = 0.0;
                        }
                    } else {
                        de.fill(0.0);
                        dov.fill(0.0);
                    }
                }
                // Bᵀ over the rows: [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
                for j in 0..tw {
                    xe[0][j] = d_e[0][j] - d_e[2][j];
                    xe[1][j] = d_e[1][j] + d_e[2][j];
                    xe[2][j] = d_e[2][j] - d_e[1][j];
                    xe[3][j] = d_e[1][j] - d_e[3][j];
                    xo[0][j] = d_o[0][j] - d_o[2][j];
                    xo[1][j] = d_o[1][j] + d_o[2][j];
                    xo[2][j] = d_o[2][j] - d_o[1][j];
                    xo[3][j] = d_o[1][j] - d_o[3][j];
                }
                let base = ci * n + rr * tw;
                for k in 0..4 {
                    let (e, o) = (&xe[k], &xo[k]);
                    let at = |c: usize| (k * 4 + c) * stride_xi + base;
                    let v0 = &mut v[at(0)..at(0) + tw];
                    v0[0] = -o[0];
                    for tx in 1..tw {
                        v0[tx] = o[tx - 1] - o[tx];
                    }
                    let v1 = &mut v[at(1)..at(1) + tw];
                    for tx in 0..tw {
                        v1[tx] = e[tx] + o[tx];
                    }
                    let v2 = &mut v[at(2)..at(2) + tw];
                    for tx in 0..tw {
                        v2[tx] = o[tx] - e[tx];
                    }
                    let v3 = &mut v[at(3)..at(3) + tw];
                    for tx in 0..tw {
                        v3[tx] = e[tx] - e[tx + 1];
                    }
                }
            }
        }
    }
}

multiversion! {
    /// V[ξ][ci][i] = (Bᵀ d B)[ξ] for the tiles i of tile rows r0..r0+nr (tiles numbered
    /// row-major within the unit), vectorised along each tile row: the row direction of the
    /// transform combines four padded input rows, the column direction works on their even
    /// and odd columns.
    fn input_transform(x: &[f32], g: &Geom, th: usize, tw: usize, r0: usize, nr: usize, v: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if winograd_w8::applies(g) {
            // SAFETY: applies() checked AVX2; v is sized for the unit by the caller.
            return unsafe { winograd_w8::input_transform(x, g, th, r0, nr, v) };
        }
        match tw {
            2 => input_transform_at::<2, 3>(x, g, th, tw, r0, nr, v),
            4 => input_transform_at::<4, 5>(x, g, th, tw, r0, nr, v),
            8 => input_transform_at::<8, 9>(x, g, th, tw, r0, nr, v),
            16 => input_transform_at::<16, 17>(x, g, th, tw, r0, nr, v),
            _ => input_transform_at::<0, { MAX_TW + 1 }>(x, g, th, tw, r0, nr, v),
        }
    }
}

/// Widest tile row (W ≤ 2·MAX_TW) the transforms handle; wider maps take im2col.
const MAX_TW: usize = 64;

/// T = G ⊗ G (16 x 9): row ξ = 4r + c, column k = 3i + j holds G[r][i]·G[c][j], so the
/// transformed kernel (G g Gᵀ)[ξ] is row ξ of T times the 9 taps, and Gᵀ Ũ G is Tᵀ times Ũ.
fn kron_g() -> [f32; 16 * 9] {
    const G: [[f32; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];
    let mut t = [0f32; 16 * 9];
    for (xi, row) in t.chunks_exact_mut(9).enumerate() {
        for (k, v) in row.iter_mut().enumerate() {
            *v = G[xi / 4][k / 3] * G[xi % 4][k % 3];
        }
    }
    t
}

/// U[ξ][co][ci] = (G g Gᵀ)[ξ] for weights w (Cout, Cin, 3, 3): one (16 x 9)·(9 x Cout·Cin)
/// product.
fn weight_transform(w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let n = cout * cin;
    let mut u = uninit_vec(16 * n);
    let t = kron_g();
    // SAFETY: u is 16 x n (row-major), t 16 x 9, and w read as the 9 x n matrix of taps.
    unsafe {
        sgemm(
            16,
            n,
            9,
            u.as_mut_ptr(),
            n as isize,
            1,
            false,
            t.as_ptr(),
            9,
            1,
            w.as_ptr(),
            1,
            9,
            1.0,
            1,
        )
    };
    u
}

/// [`output_transform`] with the tile-row width `tw` fixed at compile time when `TW` > 0 (the
/// 2- to 16-tile rows of 4x4 to 32x32 maps then unroll and vectorise).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_transform_at<const TW: usize>(
    m: &[f32],
    g: &Geom,
    th: usize,
    tw: usize,
    r0: usize,
    nr: usize,
    bias: Option<&[f32]>,
    y: *mut f32,
) {
    let tw = if TW == 0 { tw } else { TW };
    let (h, w, cout) = (g.h, g.w, g.cout);
    let n = nr * tw;
    let stride_xi = xi_stride(cout, n);
    let mut s = [[0f32; MAX_TW]; 8]; // s[i * 4 + c][tx]: Aᵀ over rows, output row i
    let mut out = [0f32; 2 * MAX_TW];
    for (b, rows, ty0) in images(r0, nr, th) {
        for co in 0..cout {
            let bv = bias.map_or(0.0, |b| b[co]);
            for (rr, ty) in rows.clone().zip(ty0..) {
                let base = co * n + rr * tw;
                let mm = |xi: usize| &m[xi * stride_xi + base..xi * stride_xi + base + tw];
                for c in 0..4 {
                    let (m0, m1, m2, m3) = (mm(c), mm(4 + c), mm(8 + c), mm(12 + c));
                    for tx in 0..tw {
                        s[c][tx] = m0[tx] + m1[tx] + m2[tx];
                        s[4 + c][tx] = m1[tx] - m2[tx] - m3[tx];
                    }
                }
                for i in 0..2 {
                    let yy = 2 * ty + i;
                    if yy >= h {
                        continue;
                    }
                    let (s0, s1, s2, s3) = (&s[i * 4], &s[i * 4 + 1], &s[i * 4 + 2], &s[i * 4 + 3]);
                    for tx in 0..tw {
                        out[2 * tx] = s0[tx] + s1[tx] + s2[tx] + bv;
                        out[2 * tx + 1] = s1[tx] - s2[tx] - s3[tx] + bv;
                    }
                    // SAFETY: row (b, co, yy) of y; units cover disjoint tile rows.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            out.as_ptr(),
                            y.add(((b * cout + co) * h + yy) * w),
                            w,
                        )
                    };
                }
            }
        }
    }
}

multiversion! {
    /// y from M[ξ][co][i] for the tile rows r0..r0+nr: Aᵀ m A plus bias, vectorised along
    /// tile rows, clipped at the right and bottom edges.
    fn output_transform(m: &[f32], g: &Geom, th: usize, tw: usize, r0: usize, nr: usize, bias: Option<&[f32]>, y: *mut f32) {
        #[cfg(target_arch = "x86_64")]
        if winograd_w8::applies(g) {
            // SAFETY: applies() checked AVX2; y is the whole output, this unit's rows its own.
            return unsafe { winograd_w8::output_transform(m, g, th, r0, nr, bias, y) };
        }
        match tw {
            2 => output_transform_at::<2>(m, g, th, tw, r0, nr, bias, y),
            4 => output_transform_at::<4>(m, g, th, tw, r0, nr, bias, y),
            8 => output_transform_at::<8>(m, g, th, tw, r0, nr, bias, y),
            16 => output_transform_at::<16>(m, g, th, tw, r0, nr, bias, y),
            _ => output_transform_at::<0>(m, g, th, tw, r0, nr, bias, y),
        }
    }
}

/// [`grad_transform`] with the tile-row width `tw` fixed at compile time when `TW` > 0 (the
/// 2- to 16-tile rows of 4x4 to 32x32 maps then unroll and vectorise).
#[inline(always)]
fn grad_transform_at<const TW: usize>(
    dy: &[f32],
    g: &Geom,
    th: usize,
    tw: usize,
    r0: usize,
    nr: usize,
    mg: &mut [f32],
) {
    let tw = if TW == 0 { tw } else { TW };
    let (h, w, cout) = (g.h, g.w, g.cout);
    let n = nr * tw;
    let stride_xi = xi_stride(cout, n);
    let mut e = [[0f32; 2 * MAX_TW]; 2];
    for (b, rows, ty0) in images(r0, nr, th) {
        for co in 0..cout {
            for (rr, ty) in rows.clone().zip(ty0..) {
                for (i, row) in e.iter_mut().enumerate() {
                    let yy = 2 * ty + i;
                    row[..2 * tw].fill(0.0);
                    if yy < h {
                        let o = ((b * cout + co) * h + yy) * w;
                        row[..w].copy_from_slice(&dy[o..o + w]);
                    }
                }
                let base = co * n + rr * tw;
                // A over the two rows: q = [e0, e0 + e1, e0 - e1, -e1], then A over columns.
                for k in 0..4 {
                    let q = |p: usize| match k {
                        0 => e[0][p],
                        1 => e[0][p] + e[1][p],
                        2 => e[0][p] - e[1][p],
                        _ => -e[1][p],
                    };
                    for tx in 0..tw {
                        let (qe, qo) = (q(2 * tx), q(2 * tx + 1));
                        mg[(k * 4) * stride_xi + base + tx] = qe;
                        mg[(k * 4 + 1) * stride_xi + base + tx] = qe + qo;
                        mg[(k * 4 + 2) * stride_xi + base + tx] = qe - qo;
                        mg[(k * 4 + 3) * stride_xi + base + tx] = -qo;
                    }
                }
            }
        }
    }
}

multiversion! {
    /// Mg[ξ][co][i] = (A dY Aᵀ)[ξ] for the tile rows r0..r0+nr (zero outside the image).
    fn grad_transform(dy: &[f32], g: &Geom, th: usize, tw: usize, r0: usize, nr: usize, mg: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if winograd_w8::applies(g) {
            // SAFETY: applies() checked AVX2; mg is sized for the unit by the caller.
            return unsafe { winograd_w8::grad_transform(dy, g, th, r0, nr, mg) };
        }
        match tw {
            2 => grad_transform_at::<2>(dy, g, th, tw, r0, nr, mg),
            4 => grad_transform_at::<4>(dy, g, th, tw, r0, nr, mg),
            8 => grad_transform_at::<8>(dy, g, th, tw, r0, nr, mg),
            16 => grad_transform_at::<16>(dy, g, th, tw, r0, nr, mg),
            _ => grad_transform_at::<0>(dy, g, th, tw, r0, nr, mg),
        }
    }
}

/// Forward through the transform domain: y = conv(x, w) + bias.
pub(crate) fn forward(x: &[f32], w: &[f32], bias: Option<&[f32]>, g: &Geom) -> Vec<f32> {
    let (cin, cout) = (g.cin, g.cout);
    let tl = tiles(g);
    let u = weight_transform(w, cout, cin);
    let mut y = uninit_vec(g.b * cout * g.h * g.w);
    let yp = SendPtr(y.as_mut_ptr());
    par_for(tl.units, |unit| {
        let r0 = unit * tl.per;
        let nr = tl.per.min(tl.rows - r0);
        let n = nr * tl.tw;
        with_scratch(
            [16 * xi_stride(cin, n), 16 * xi_stride(cout, n), 0],
            |v, m, _| {
                input_transform(x, g, tl.th, tl.tw, r0, nr, v);
                for xi in 0..16 {
                    // SAFETY: the matrices lie inside their slices with the strides given.
                    unsafe {
                        sgemm(
                            cout,
                            n,
                            cin,
                            m.as_mut_ptr().add(xi * xi_stride(cout, n)),
                            n as isize,
                            1,
                            false,
                            u.as_ptr().add(xi * cout * cin),
                            cin as isize,
                            1,
                            v.as_ptr().add(xi * xi_stride(cin, n)),
                            n as isize,
                            1,
                            1.0,
                            1,
                        )
                    };
                }
                output_transform(m, g, tl.th, tl.tw, r0, nr, bias, yp.get());
            },
        );
    });
    y
}

/// Input gradient: the forward with kernels flipped in space and Cin/Cout swapped.
pub(crate) fn input_grad(dy: &[f32], w: &[f32], g: &Geom) -> Vec<f32> {
    let (cin, cout) = (g.cin, g.cout);
    let mut wf = vec![0f32; w.len()];
    for co in 0..cout {
        for ci in 0..cin {
            for k in 0..9 {
                wf[(ci * cout + co) * 9 + (8 - k)] = w[(co * cin + ci) * 9 + k];
            }
        }
    }
    let gt = Geom {
        cin: cout,
        cout: cin,
        ..*g
    };
    forward(dy, &wf, None, &gt)
}

/// Weight gradient: Gᵀ[Σ_tiles (A dY Aᵀ) ⊙ (Bᵀ d B)]G per (co, ci).
pub(crate) fn weight_grad(x: &[f32], dy: &[f32], g: &Geom) -> Vec<f32> {
    let (cin, cout) = (g.cin, g.cout);
    let tl = tiles(g);
    let parts = par_fold(
        tl.units,
        || vec![0f32; 16 * cout * cin],
        |acc: &mut Vec<f32>, unit| {
            let r0 = unit * tl.per;
            let nr = tl.per.min(tl.rows - r0);
            let n = nr * tl.tw;
            with_scratch(
                [16 * xi_stride(cin, n), 16 * xi_stride(cout, n), 0],
                |v, mg, _| {
                    input_transform(x, g, tl.th, tl.tw, r0, nr, v);
                    grad_transform(dy, g, tl.th, tl.tw, r0, nr, mg);
                    for xi in 0..16 {
                        // acc[ξ] (Cout x Cin) += Mg[ξ] (Cout x n) · V[ξ]ᵀ (n x Cin)
                        // SAFETY: the matrices lie inside their slices with the strides given.
                        unsafe {
                            sgemm(
                                cout,
                                cin,
                                n,
                                acc.as_mut_ptr().add(xi * cout * cin),
                                cin as isize,
                                1,
                                true,
                                mg.as_ptr().add(xi * xi_stride(cout, n)),
                                n as isize,
                                1,
                                v.as_ptr().add(xi * xi_stride(cin, n)),
                                1,
                                n as isize,
                                1.0,
                                1,
                            )
                        };
                    }
                },
            );
        },
    );
    let mut acc = vec![0f32; 16 * cout * cin];
    for p in parts {
        for (a, b) in acc.iter_mut().zip(&p) {
            *a += *b;
        }
    }
    // dW = Gᵀ Ũ G: the (9 x 16) Tᵀ times Ũ (16 x Cout·Cin), written tap-minor.
    let n = cout * cin;
    let mut dw = uninit_vec(n * 9);
    let t = kron_g();
    // SAFETY: dw is read as the 9 x n matrix of taps, t transposed is 9 x 16, acc is 16 x n.
    unsafe {
        sgemm(
            9,
            n,
            16,
            dw.as_mut_ptr(),
            1,
            9,
            false,
            t.as_ptr(),
            1,
            9,
            acc.as_ptr(),
            n as isize,
            1,
            1.0,
            1,
        )
    };
    dw
}
