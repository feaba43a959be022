//! Fitting an image of any shape to the models' `size` x `size` square, as torchvision's
//! `Resize(size)` + `CenterCrop(size)` do: the largest centred square is cut out (the shorter
//! side whole, the longer side's excess split evenly, the odd pixel off the far end), then
//! resized to `size`, by area averaging when it shrinks and bilinearly when it grows
//! ([`super::resize`] says why), and mapped to [-1, 1].
//!
//! Cropping before resizing keeps the scale the same on both axes, so nothing is stretched;
//! torchvision resizes first and crops after, which can place the crop up to half a source
//! pixel differently.

use super::resize;

/// The largest centred square of an `h` x `w` image: (top, left, side).
pub fn centre_square(h: usize, w: usize) -> (usize, usize, usize) {
    let side = h.min(w);
    ((h - side) / 2, (w - side) / 2, side)
}

/// The `side` x `side` square at (`top`, `left`) of a planar `channels` x `h` x `w` image.
///
/// Panics if the square does not lie inside the image (its coordinates come from
/// [`centre_square`], never from a user).
pub fn crop<T: Copy>(
    src: &[T],
    channels: usize,
    (h, w): (usize, usize),
    (top, left, side): (usize, usize, usize),
) -> Vec<T> {
    assert!(
        top + side <= h && left + side <= w && src.len() == channels * h * w,
        "crop: {side}x{side} at ({top}, {left}) is not inside {channels}x{h}x{w}"
    );
    let mut out = Vec::with_capacity(channels * side * side);
    for plane in src.chunks_exact(h * w) {
        for y in top..top + side {
            out.extend_from_slice(&plane[y * w + left..y * w + left + side]);
        }
    }
    out
}

/// A planar u8 image cropped to its centred square, resized to `size` x `size` and mapped to
/// [-1, 1].
pub fn centre_crop(src: &[u8], channels: usize, (h, w): (usize, usize), size: usize) -> Vec<f32> {
    let square = centre_square(h, w);
    let side = square.2;
    let cut = crop(src, channels, (h, w), square);
    let mut out = resize::resize_area(&cut, channels, (side, side), (size, size));
    resize::to_signed_unit(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squares_are_centred_with_the_odd_pixel_off_the_far_end() {
        assert_eq!(centre_square(23, 37), (0, 7, 23));
        assert_eq!(centre_square(37, 23), (7, 0, 23));
        assert_eq!(centre_square(5, 8), (0, 1, 5));
        assert_eq!(centre_square(4, 4), (0, 0, 4));
    }

    #[test]
    fn crop_takes_the_square_of_each_plane() {
        // Two planes of 2x4: values 0..8 and 10..18.
        let src: Vec<u8> = (0..8).chain(10..18).collect();
        let out = crop(&src, 2, (2, 4), centre_square(2, 4));
        assert_eq!(out, [1, 2, 5, 6, 11, 12, 15, 16]);
    }

    #[test]
    fn a_wide_image_keeps_its_middle() {
        // 2 rows x 6 columns: black, black, white, white, black, black -> the middle 2x2 is
        // white, and so is all of the 1x1 output.
        let row = [0u8, 0, 255, 255, 0, 0];
        let src: Vec<u8> = row.iter().chain(&row).copied().collect();
        assert_eq!(centre_crop(&src, 1, (2, 6), 1), [1.0]);
        assert_eq!(centre_crop(&src, 1, (2, 6), 4), [1.0; 16]);
    }
}
