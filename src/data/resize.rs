//! Bilinear resize with PyTorch's semantics (`F.interpolate(mode="bilinear",
//! align_corners=False)`, no antialiasing): pixel centres at half-integers, source coordinate
//! `(dst + 0.5) * in / out - 0.5` clamped at 0, neighbours clamped at the last pixel.
//!
//! Area resize for shrinking: every output pixel is the mean of the source area it covers,
//! pixels cut by its border weighted by the part inside (OpenCV's `INTER_AREA`; PyTorch's
//! `mode="area"` when the factor is a whole number). Bilinear without antialiasing reads only
//! the 2x2 pixels nearest each output centre, so shrinking by more than 2 skips most of the
//! image and aliases fine detail; area averaging reads every pixel once.
//!
//! Images are planar (channels, then rows, then columns), as tensors are.

/// For each output coordinate: the two source indices and their weights.
fn axis(in_len: usize, out_len: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = in_len as f64 / out_len as f64;
    (0..out_len)
        .map(|d| {
            let src = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(in_len - 1);
            let i1 = (i0 + 1).min(in_len - 1);
            let l1 = (src - i0 as f64).clamp(0.0, 1.0) as f32;
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Resizes a planar `channels` x `in_h` x `in_w` image to `channels` x `out_h` x `out_w`.
/// Works on u8 and f32 pixels alike; the result is f32 and is not rounded.
///
/// Panics if `src.len() != channels * in_h * in_w` or a size is 0 (sizes come from this
/// module's decoders, never straight from a user).
pub fn resize_bilinear<T: Copy + Into<f32>>(
    src: &[T],
    channels: usize,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
) -> Vec<f32> {
    let mut out = vec![0.0; channels * out_h * out_w];
    resize_bilinear_into(src, channels, (in_h, in_w), (out_h, out_w), &mut out);
    out
}

/// [`resize_bilinear`] into `out`, which must hold `channels * out_h * out_w` values.
pub fn resize_bilinear_into<T: Copy + Into<f32>>(
    src: &[T],
    channels: usize,
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
    out: &mut [f32],
) {
    assert_eq!(
        src.len(),
        channels * in_h * in_w,
        "resize_bilinear: {} pixels is not {channels}x{in_h}x{in_w}",
        src.len()
    );
    assert_eq!(
        out.len(),
        channels * out_h * out_w,
        "resize_bilinear: output of {} is not {channels}x{out_h}x{out_w}",
        out.len()
    );
    assert!(
        in_h > 0 && in_w > 0 && out_h > 0 && out_w > 0,
        "resize_bilinear: empty image"
    );
    if in_h == out_h && in_w == out_w {
        for (o, &v) in out.iter_mut().zip(src) {
            *o = v.into();
        }
        return;
    }
    let ys = axis(in_h, out_h);
    let xs = axis(in_w, out_w);
    let mut o = out.iter_mut();
    for plane in src.chunks_exact(in_h * in_w) {
        for &(y0, y1, wy0, wy1) in &ys {
            let r0 = &plane[y0 * in_w..(y0 + 1) * in_w];
            let r1 = &plane[y1 * in_w..(y1 + 1) * in_w];
            for &(x0, x1, wx0, wx1) in &xs {
                let top = wx0 * r0[x0].into() + wx1 * r0[x1].into();
                let bottom = wx0 * r1[x0].into() + wx1 * r1[x1].into();
                if let Some(slot) = o.next() {
                    *slot = wy0 * top + wy1 * bottom;
                }
            }
        }
    }
}

/// For each output coordinate: the source pixels it covers and the fraction of its area each
/// is, for shrinking `in_len` to `out_len <= in_len`.
fn area_axis(in_len: usize, out_len: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = in_len as f64 / out_len as f64;
    (0..out_len)
        .map(|d| {
            let (lo, hi) = (d as f64 * scale, (d as f64 + 1.0) * scale);
            let first = lo.floor() as usize;
            let last = (hi.ceil() as usize).min(in_len);
            (first..last)
                .map(|i| {
                    let covered = (hi.min(i as f64 + 1.0) - lo.max(i as f64)).max(0.0);
                    (i, (covered / scale) as f32)
                })
                .filter(|&(_, w)| w > 0.0)
                .collect()
        })
        .collect()
}

/// Area resize of a planar `channels` x `in_h` x `in_w` image to `channels` x `out_h` x `out_w`,
/// for shrinking (an output side larger than the input's falls back to [`resize_bilinear`]).
///
/// Panics on the same wrong lengths and empty sizes as [`resize_bilinear`].
pub fn resize_area<T: Copy + Into<f32>>(
    src: &[T],
    channels: usize,
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
) -> Vec<f32> {
    if out_h > in_h || out_w > in_w {
        return resize_bilinear(src, channels, in_h, in_w, out_h, out_w);
    }
    assert_eq!(
        src.len(),
        channels * in_h * in_w,
        "resize_area: {} pixels is not {channels}x{in_h}x{in_w}",
        src.len()
    );
    assert!(out_h > 0 && out_w > 0, "resize_area: empty image");
    let ys = area_axis(in_h, out_h);
    let xs = area_axis(in_w, out_w);
    let mut out = Vec::with_capacity(channels * out_h * out_w);
    let mut row = vec![0.0f32; in_w];
    for plane in src.chunks_exact(in_h * in_w) {
        for taps in &ys {
            // The output row's vertical mean over the whole width, then each output column's
            // horizontal mean of it.
            row.fill(0.0);
            for &(y, wy) in taps {
                for (acc, &v) in row.iter_mut().zip(&plane[y * in_w..(y + 1) * in_w]) {
                    *acc += wy * v.into();
                }
            }
            out.extend(
                xs.iter()
                    .map(|taps| taps.iter().map(|&(x, wx)| wx * row[x]).sum::<f32>()),
            );
        }
    }
    out
}

/// Maps pixel values in [0, 255] to [-1, 1]: `x / 255 * 2 - 1`, clamped so float rounding in
/// the resize can never step outside.
pub fn to_signed_unit(pixels: &mut [f32]) {
    for p in pixels {
        *p = (*p / 255.0 * 2.0 - 1.0).clamp(-1.0, 1.0);
    }
}

/// Resizes a u8 image to `size` x `size` and maps it to [-1, 1], into `out`
/// (`channels * size * size` values).
pub fn prepare_u8_into(
    src: &[u8],
    channels: usize,
    (in_h, in_w): (usize, usize),
    size: usize,
    out: &mut [f32],
) {
    resize_bilinear_into(src, channels, (in_h, in_w), (size, size), out);
    to_signed_unit(out);
}

/// [`prepare_u8_into`] into a new vector.
pub fn prepare_u8(src: &[u8], channels: usize, in_h: usize, in_w: usize, size: usize) -> Vec<f32> {
    let mut out = vec![0.0; channels * size * size];
    prepare_u8_into(src, channels, (in_h, in_w), size, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() < 1e-5, "at {i}: {x} vs {y}\n{a:?}\n{b:?}");
        }
    }

    #[test]
    fn constant_stays_constant() {
        let src = vec![77u8; 3 * 28 * 28];
        let out = resize_bilinear(&src, 3, 28, 28, 32, 32);
        assert_eq!(out.len(), 3 * 32 * 32);
        assert!(out.iter().all(|&v| (v - 77.0).abs() < 1e-4));
        let down = resize_bilinear(&src, 3, 28, 28, 9, 13);
        assert!(down.iter().all(|&v| (v - 77.0).abs() < 1e-4));
    }

    #[test]
    fn two_by_two_to_four_by_four_matches_pytorch() {
        // torch.nn.functional.interpolate(torch.tensor([[[[1., 2.], [3., 4.]]]]), size=(4, 4),
        // mode="bilinear", align_corners=False). By hand: source coordinates of the outputs are
        // max((d + 0.5) / 2 - 0.5, 0) = 0, 0.25, 0.75, 1.25 (-> clamped to pixel 1), so along an
        // axis [p, q] becomes [p, 0.75p + 0.25q, 0.25p + 0.75q, q].
        let src = [1.0f32, 2.0, 3.0, 4.0];
        let out = resize_bilinear(&src, 1, 2, 2, 4, 4);
        #[rustfmt::skip]
        let expected = [
            1.0, 1.25, 1.75, 2.0,
            1.5, 1.75, 2.25, 2.5,
            2.5, 2.75, 3.25, 3.5,
            3.0, 3.25, 3.75, 4.0,
        ];
        close(&out, &expected);
        // u8 input gives the same numbers, unrounded.
        let out = resize_bilinear(&[0u8, 10, 20, 30], 1, 2, 2, 4, 4);
        #[rustfmt::skip]
        let expected = [
            0.0, 2.5, 7.5, 10.0,
            5.0, 7.5, 12.5, 15.0,
            15.0, 17.5, 22.5, 25.0,
            20.0, 22.5, 27.5, 30.0,
        ];
        close(&out, &expected);
    }

    #[test]
    fn channels_are_resized_independently() {
        // Two planes: [[1,2],[3,4]] and its negation.
        let src = [1.0f32, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -4.0];
        let out = resize_bilinear(&src, 2, 2, 2, 4, 4);
        for i in 0..16 {
            assert!((out[i] + out[16 + i]).abs() < 1e-6);
        }
        assert!((out[5] - 1.75).abs() < 1e-6);
    }

    #[test]
    fn downscale_samples_like_pytorch() {
        // 4 -> 2 without antialiasing: source coordinates 0.5 and 2.5, so the mean of pixel
        // pairs (0,1) and (2,3): [0, 10, 20, 30] -> [5, 25].
        let out = resize_bilinear(&[0u8, 10, 20, 30], 1, 1, 4, 1, 2);
        close(&out, &[5.0, 25.0]);
        // 28 -> 32: first output's source is max(0.5*0.875-0.5, 0) = 0 -> pixel 0 exactly;
        // second's is 1.5*0.875-0.5 = 0.8125 between pixels 0 and 1.
        let row: Vec<u8> = (0..28).map(|i| (i * 9) as u8).collect();
        let out = resize_bilinear(&row, 1, 1, 28, 1, 32);
        assert!((out[0] - 0.0).abs() < 1e-5);
        assert!((out[1] - 0.8125 * 9.0).abs() < 1e-4, "{}", out[1]);
        assert!((out[31] - 243.0).abs() < 1e-4, "{}", out[31]);
    }

    #[test]
    fn area_averages_whole_blocks() {
        // 4x4 -> 2x2: the mean of each 2x2 block.
        #[rustfmt::skip]
        let src: [u8; 16] = [
            0, 2, 10, 20,
            4, 6, 30, 40,
            1, 1, 9, 9,
            1, 1, 9, 9,
        ];
        let out = resize_area(&src, 1, (4, 4), (2, 2));
        close(&out, &[3.0, 25.0, 1.0, 9.0]);
        // 3 -> 2: pixels of 1.5 source pixels each, the middle one split in halves:
        // [(a + b/2) / 1.5, (b/2 + c) / 1.5].
        let out = resize_area(&[0.0f32, 3.0, 6.0], 1, (1, 3), (1, 2));
        close(&out, &[1.0, 5.0]);
        // Constant planes stay constant, channels apart.
        let two: Vec<u8> = [7u8; 37 * 23]
            .iter()
            .chain(&[200u8; 37 * 23])
            .copied()
            .collect();
        let out = resize_area(&two, 2, (23, 37), (5, 9));
        assert!(out[..45].iter().all(|&v| (v - 7.0).abs() < 1e-4));
        assert!(out[45..].iter().all(|&v| (v - 200.0).abs() < 1e-3));
        // Enlarging falls back to bilinear.
        close(
            &resize_area(&[0u8, 10, 20, 30], 1, (2, 2), (4, 4)),
            &resize_bilinear(&[0u8, 10, 20, 30], 1, 2, 2, 4, 4),
        );
    }

    #[test]
    fn output_range() {
        let src: Vec<u8> = (0..28 * 28).map(|i| ((i * 37) % 256) as u8).collect();
        let out = prepare_u8(&src, 1, 28, 28, 32);
        let (lo, hi) = out
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(lo >= -1.0 && hi <= 1.0, "{lo} {hi}");
        assert!(lo < -0.9 && hi > 0.9, "{lo} {hi}");
        let mut ends = [0.0f32, 255.0, 127.5];
        to_signed_unit(&mut ends);
        close(&ends, &[-1.0, 1.0, 0.0]);
    }
}
