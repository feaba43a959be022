//! Matrix transpose for weight layouts: 8x8 blocks in AVX registers where the kernels run
//! AVX2 or above, a scalar loop for the edges and elsewhere.

/// `dst` (cols x rows, row-major) = `src` (rows x cols, row-major) transposed.
pub(crate) fn transpose_into(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    #[cfg(target_arch = "x86_64")]
    if crate::nn::cpu::isa() >= crate::nn::cpu::Isa::Avx2 {
        // SAFETY: the CPU has AVX (part of AVX2); both slices hold rows x cols values
        // (asserted above).
        unsafe { avx::transpose(src, rows, cols, dst) };
        return;
    }
    scalar(src, rows, cols, 0, 0, dst);
}

/// `src` (rows x cols) transposed into a new vector.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = super::util::uninit_vec(rows * cols);
    transpose_into(src, rows, cols, &mut t);
    t
}

/// The entries at row >= r0 or column >= c0 (the whole matrix for r0 = c0 = 0), in 32x32
/// blocks that stay in cache.
fn scalar(src: &[f32], rows: usize, cols: usize, r0: usize, c0: usize, dst: &mut [f32]) {
    const BLK: usize = 32;
    for rb in (0..rows).step_by(BLK) {
        for cb in (0..cols).step_by(BLK) {
            for r in rb..(rb + BLK).min(rows) {
                for c in cb..(cb + BLK).min(cols) {
                    if r >= r0 || c >= c0 {
                        dst[c * rows + r] = src[r * cols + c];
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// Full 8x8 blocks in registers, in 64x64 tiles for the cache; the ragged edges scalar.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
        const TILE: usize = 64;
        let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
        for rt in (0..r8).step_by(TILE) {
            for ct in (0..c8).step_by(TILE) {
                for r in (rt..(rt + TILE).min(r8)).step_by(8) {
                    for c in (ct..(ct + TILE).min(c8)).step_by(8) {
                        // SAFETY: rows r..r+8 and columns c..c+8 lie inside both matrices.
                        unsafe {
                            block(
                                src.as_ptr().add(r * cols + c),
                                cols,
                                dst.as_mut_ptr().add(c * rows + r),
                                rows,
                            )
                        };
                    }
                }
            }
        }
        if r8 < rows || c8 < cols {
            super::scalar(src, rows, cols, r8, c8, dst);
        }
    }

    /// One 8x8 block: s (row stride ls) to d (row stride ld), transposed.
    #[target_feature(enable = "avx")]
    unsafe fn block(s: *const f32, ls: usize, d: *mut f32, ld: usize) {
        // SAFETY: the caller guarantees 8 rows of 8 values at s and at d.
        unsafe {
            let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(s.add(i * ls)));
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let out = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (i, v) in out.into_iter().enumerate() {
                _mm256_storeu_ps(d.add(i * ld), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_every_shape_exactly() {
        for (rows, cols) in [
            (1, 1),
            (3, 5),
            (8, 8),
            (9, 17),
            (16, 8),
            (65, 130),
            (9, 4096),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut fast = vec![f32::NAN; rows * cols];
            transpose_into(&src, rows, cols, &mut fast);
            let mut slow = vec![f32::NAN; rows * cols];
            scalar(&src, rows, cols, 0, 0, &mut slow);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        fast[c * rows + r],
                        src[r * cols + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                }
            }
            assert_eq!(fast, slow, "{rows}x{cols}");
        }
    }
}
