//! The colour bitmaps of an emoji font (CBDT/CBLC as in Noto Color Emoji, or sbix), read with
//! `ttf-parser` from the largest strike, and made into square RGB pictures: composited onto
//! white (the emoji's transparent surround becomes a plain background; dropping alpha would
//! keep whatever colour those pixels store), padded with white to a centred square (emoji are
//! drawn to fill their box: cropping would cut them) and shrunk by area averaging.

use image::RgbaImage;
use ttf_parser::{Face, RasterImageFormat};

use crate::data::resize;

/// The glyph bitmap of `c`: `None` when the font has no glyph or no colour bitmap for it, an
/// error when the bitmap is there but unreadable.
pub fn bitmap(face: &Face<'_>, c: char) -> Option<Result<RgbaImage, String>> {
    let glyph = face.glyph_index(c)?;
    let raster = face.glyph_raster_image(glyph, u16::MAX)?;
    if raster.format != RasterImageFormat::PNG {
        return Some(Err(format!("its bitmap is {:?}, not PNG", raster.format)));
    }
    Some(
        image::load_from_memory_with_format(raster.data, image::ImageFormat::Png)
            .map(|img| img.to_rgba8())
            .map_err(|e| e.to_string()),
    )
}

/// `img` composited onto white, padded with white to a centred square and resized to
/// `size` x `size`: interleaved RGB bytes.
pub fn square_rgb(img: &RgbaImage, size: usize) -> Vec<u8> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let side = w.max(h).max(1);
    let (left, top) = ((side - w) / 2, (side - h) / 2);
    // Planar, as the resize wants it: (3, side, side).
    let mut planes = vec![255.0f32; 3 * side * side];
    for (x, y, p) in img.enumerate_pixels() {
        let a = f32::from(p[3]) / 255.0;
        let at = (top + y as usize) * side + left + x as usize;
        for c in 0..3 {
            planes[c * side * side + at] = a * f32::from(p[c]) + (1.0 - a) * 255.0;
        }
    }
    let small = resize::resize_area(&planes, 3, (side, side), (size, size));
    let plane = size * size;
    (0..plane)
        .flat_map(|i| (0..3).map(move |c| (c, i)))
        .map(|(c, i)| small[c * plane + i].round().clamp(0.0, 255.0) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgba;

    #[test]
    fn transparent_becomes_white_and_wide_images_are_padded() {
        // 4 wide, 2 high: left half opaque red, right half fully transparent black.
        let img = RgbaImage::from_fn(4, 2, |x, _| {
            if x < 2 {
                Rgba([255, 0, 0, 255])
            } else {
                Rgba([0, 0, 0, 0])
            }
        });
        let out = square_rgb(&img, 4);
        let px = |r: usize, c: usize| &out[(r * 4 + c) * 3..(r * 4 + c) * 3 + 3];
        // Rows 0 and 3 are padding, rows 1-2 the image.
        for c in 0..4 {
            assert_eq!(px(0, c), [255, 255, 255]);
            assert_eq!(px(3, c), [255, 255, 255]);
        }
        assert_eq!(px(1, 0), [255, 0, 0]);
        assert_eq!(px(2, 1), [255, 0, 0]);
        assert_eq!(px(1, 2), [255, 255, 255]);
        // Half transparent red over white is pink; shrinking averages.
        let half = RgbaImage::from_pixel(2, 2, Rgba([255, 0, 0, 128]));
        assert_eq!(square_rgb(&half, 1), [255, 127, 127]);
    }
}
