//! Image grids: a batch of NCHW `[-1, 1]` images tiled into one 8-bit picture, PNG encoding,
//! and PNG files written atomically.

use std::path::Path;

use image::{ExtendedColorType, ImageEncoder, codecs::png::PngEncoder};

use super::{LogError, Result};

/// Grey level of the padding between (and around) tiles: visible on black MNIST backgrounds
/// and on white ones alike.
pub const PAD_VALUE: u8 = 128;

/// An 8-bit picture, row-major, channels interleaved (HWC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GridImage {
    pub width: usize,
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `height * width * channels` bytes, row-major HWC.
    pub pixels: Vec<u8>,
}

impl GridImage {
    /// A `width` x `height` picture filled with `value`.
    pub fn filled(width: usize, height: usize, channels: usize, value: u8) -> Self {
        GridImage {
            width,
            height,
            channels,
            pixels: vec![value; width * height * channels],
        }
    }

    /// The `channels` bytes of pixel (x, y).
    ///
    /// # Panics
    /// If (x, y) is outside the picture.
    pub fn pixel(&self, x: usize, y: usize) -> &[u8] {
        assert!(
            x < self.width && y < self.height,
            "pixel ({x}, {y}) outside a {}x{} image",
            self.width,
            self.height
        );
        let i = (y * self.width + x) * self.channels;
        &self.pixels[i..i + self.channels]
    }

    /// Checks that the channel count is 1 or 3 and the buffer has the right length.
    pub fn validate(&self) -> Result<()> {
        if self.channels != 1 && self.channels != 3 {
            return Err(LogError::InvalidImage(format!(
                "{} channels (only 1 or 3 are supported)",
                self.channels
            )));
        }
        let want = self.width * self.height * self.channels;
        if self.pixels.len() != want {
            return Err(LogError::InvalidImage(format!(
                "{}x{}x{} needs {want} bytes, got {}",
                self.width,
                self.height,
                self.channels,
                self.pixels.len()
            )));
        }
        if self.width == 0 || self.height == 0 {
            return Err(LogError::InvalidImage(format!(
                "empty image ({}x{})",
                self.width, self.height
            )));
        }
        Ok(())
    }

    /// The same picture with 3 channels (grey repeated); a 3-channel picture is cloned.
    pub fn to_rgb(&self) -> GridImage {
        if self.channels == 3 {
            return self.clone();
        }
        GridImage {
            width: self.width,
            height: self.height,
            channels: 3,
            pixels: self.pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        }
    }
}

/// Maps a model-space value in `[-1, 1]` to `[0, 255]`, clamping outside values; NaN maps to 0.
pub fn to_u8(v: f32) -> u8 {
    if v.is_nan() {
        return 0;
    }
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// Tiles `n` images of a NCHW `f32` batch (values in `[-1, 1]`) into one picture.
///
/// Tiles are laid out row by row, `cols` per row (fewer if `n < cols`), with `pad` pixels of
/// [`PAD_VALUE`] between tiles and around the border: the picture is
/// `pad + cols * (size_w + pad)` wide and `pad + rows * (size_h + pad)` high. Tile `i` has its
/// top-left corner at `(pad + (i % cols) * (size_w + pad), pad + (i / cols) * (size_h + pad))`.
/// Cells of the last row left without an image are padding.
///
/// # Panics
/// If `channels` is not 1 or 3, `n`, `size_h` or `size_w` is 0, or `images` holds fewer than
/// `n * channels * size_h * size_w` values (a caller bug, not a run-time condition).
pub fn grid(
    images: &[f32],
    n: usize,
    channels: usize,
    size_h: usize,
    size_w: usize,
    cols: usize,
    pad: usize,
) -> GridImage {
    assert!(
        channels == 1 || channels == 3,
        "grid: {channels} channels (only 1 or 3)"
    );
    assert!(
        n > 0 && size_h > 0 && size_w > 0,
        "grid: empty batch ({n} images of {size_h}x{size_w})"
    );
    let plane = size_h * size_w;
    assert!(
        images.len() >= n * channels * plane,
        "grid: {} values for {n} images of {channels}x{size_h}x{size_w}",
        images.len()
    );
    let cols = cols.clamp(1, n);
    let rows = n.div_ceil(cols);
    let width = pad + cols * (size_w + pad);
    let height = pad + rows * (size_h + pad);
    let mut out = GridImage::filled(width, height, channels, PAD_VALUE);
    for i in 0..n {
        let x0 = pad + (i % cols) * (size_w + pad);
        let y0 = pad + (i / cols) * (size_h + pad);
        let img = &images[i * channels * plane..(i + 1) * channels * plane];
        for y in 0..size_h {
            let row = ((y0 + y) * width + x0) * channels;
            for x in 0..size_w {
                for c in 0..channels {
                    out.pixels[row + x * channels + c] = to_u8(img[c * plane + y * size_w + x]);
                }
            }
        }
    }
    out
}

/// Originals next to their reconstructions: each tile pair is (original `i`, reconstruction
/// `i`), `cols` pairs per row, so a row holds `2 * cols` tiles laid out as by [`grid`].
///
/// # Panics
/// As [`grid`], for either batch.
#[allow(clippy::too_many_arguments)]
pub fn pairs(
    originals: &[f32],
    reconstructions: &[f32],
    n: usize,
    channels: usize,
    size_h: usize,
    size_w: usize,
    cols: usize,
    pad: usize,
) -> GridImage {
    let len = channels * size_h * size_w;
    assert!(
        originals.len() >= n * len && reconstructions.len() >= n * len,
        "pairs: {} originals and {} reconstruction values for {n} images of {channels}x{size_h}x{size_w}",
        originals.len(),
        reconstructions.len()
    );
    let mut both = Vec::with_capacity(2 * n * len);
    for i in 0..n {
        both.extend_from_slice(&originals[i * len..(i + 1) * len]);
        both.extend_from_slice(&reconstructions[i * len..(i + 1) * len]);
    }
    grid(
        &both,
        2 * n,
        channels,
        size_h,
        size_w,
        2 * cols.clamp(1, n.max(1)),
        pad,
    )
}

/// `left` and `right` side by side with `pad` columns of [`PAD_VALUE`] between them, top-aligned;
/// the shorter one is padded below. A grey picture next to an RGB one is turned into RGB.
pub fn concat_h(left: &GridImage, right: &GridImage, pad: usize) -> GridImage {
    let (l, r);
    let (left, right) = if left.channels == right.channels {
        (left, right)
    } else {
        l = left.to_rgb();
        r = right.to_rgb();
        (&l, &r)
    };
    let c = left.channels;
    let width = left.width + pad + right.width;
    let height = left.height.max(right.height);
    let mut out = GridImage::filled(width, height, c, PAD_VALUE);
    for (img, x0) in [(left, 0), (right, left.width + pad)] {
        for y in 0..img.height {
            let src = &img.pixels[y * img.width * c..(y + 1) * img.width * c];
            let dst = (y * width + x0) * c;
            out.pixels[dst..dst + src.len()].copy_from_slice(src);
        }
    }
    out
}

/// The picture as PNG bytes (8-bit grey or RGB).
pub fn encode_png(img: &GridImage) -> Result<Vec<u8>> {
    img.validate()?;
    let png_err = |message: String| LogError::Png {
        width: img.width,
        height: img.height,
        channels: img.channels,
        message,
    };
    let color = if img.channels == 1 {
        ExtendedColorType::L8
    } else {
        ExtendedColorType::Rgb8
    };
    let w = u32::try_from(img.width).map_err(|_| png_err("width too large".into()))?;
    let h = u32::try_from(img.height).map_err(|_| png_err("height too large".into()))?;
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(&img.pixels, w, h, color)
        .map_err(|e| png_err(e.to_string()))?;
    Ok(out)
}

/// Writes the picture as a PNG file atomically (see [`crate::atomic_file`]), creating its
/// folder if needed: a reader never sees a half-written PNG.
pub fn save_png(img: &GridImage, path: &Path) -> Result<()> {
    let bytes = encode_png(img)?;
    crate::atomic_file::write(path, &bytes)
        .map_err(|e| LogError::io("write PNG", &e.path, e.source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// NCHW batch where image i, channel c, pixel (y, x) has a distinct value in [-1, 1].
    fn batch(
        n: usize,
        c: usize,
        h: usize,
        w: usize,
        f: impl Fn(usize, usize, usize, usize) -> f32,
    ) -> Vec<f32> {
        let mut v = Vec::with_capacity(n * c * h * w);
        for i in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        v.push(f(i, ch, y, x));
                    }
                }
            }
        }
        v
    }

    #[test]
    fn maps_minus_one_one_to_bytes_with_clamping() {
        assert_eq!(to_u8(-1.0), 0);
        assert_eq!(to_u8(1.0), 255);
        assert_eq!(to_u8(0.0), 128);
        assert_eq!(to_u8(-0.5), 64); // 63.75 rounds to 64
        assert_eq!(to_u8(0.5), 191); // 191.25
        assert_eq!(to_u8(-7.0), 0);
        assert_eq!(to_u8(3.5), 255);
        assert_eq!(to_u8(f32::NAN), 0);
        assert_eq!(to_u8(f32::INFINITY), 255);
        assert_eq!(to_u8(f32::NEG_INFINITY), 0);
    }

    #[test]
    fn grey_grid_layout_corners_and_padding() {
        // 5 images of 2x3 (h x w), 2 columns, pad 1 -> 3 rows.
        // Image i is filled with one value so each tile is recognisable.
        let vals = [-1.0f32, -0.5, 0.0, 0.5, 1.0];
        let imgs = batch(5, 1, 2, 3, |i, _, _, _| vals[i]);
        let g = grid(&imgs, 5, 1, 2, 3, 2, 1);
        assert_eq!(
            (g.width, g.height, g.channels),
            (1 + 2 * (3 + 1), 1 + 3 * (2 + 1), 1)
        );
        assert_eq!((g.width, g.height), (9, 10));
        assert_eq!(g.pixels.len(), 90);
        let expect = [0u8, 64, 128, 191, 255];
        for (i, &e) in expect.iter().enumerate() {
            let x0 = 1 + (i % 2) * 4;
            let y0 = 1 + (i / 2) * 3;
            // all four corners of tile i
            for (x, y) in [(x0, y0), (x0 + 2, y0), (x0, y0 + 1), (x0 + 2, y0 + 1)] {
                assert_eq!(g.pixel(x, y), &[e], "tile {i} at ({x},{y})");
            }
            // padding just outside the tile
            assert_eq!(g.pixel(x0 - 1, y0), &[PAD_VALUE]);
            assert_eq!(g.pixel(x0 + 3, y0), &[PAD_VALUE]);
            assert_eq!(g.pixel(x0, y0 - 1), &[PAD_VALUE]);
            assert_eq!(g.pixel(x0, y0 + 2), &[PAD_VALUE]);
        }
        // the empty 6th cell (row 2, col 1) is padding
        for y in 7..9 {
            for x in 5..8 {
                assert_eq!(g.pixel(x, y), &[PAD_VALUE]);
            }
        }
        // Each tile holds exactly size_h*size_w pixels of its value: count them.
        let count = |v: u8| g.pixels.iter().filter(|&&p| p == v).count();
        assert_eq!(count(0), 6);
        assert_eq!(count(255), 6);
        assert_eq!(count(PAD_VALUE), 90 - 5 * 6 + 6); // padding + tile 2 (value 128)
    }

    #[test]
    fn pixel_order_inside_non_square_tile() {
        // One 2x4 image whose pixel (y, x) is distinct; no padding.
        let imgs = batch(1, 1, 2, 4, |_, _, y, x| {
            -1.0 + (y * 4 + x) as f32 * (2.0 / 7.0)
        });
        let g = grid(&imgs, 1, 1, 2, 4, 8, 0);
        assert_eq!((g.width, g.height), (4, 2));
        let want: Vec<u8> = (0..8)
            .map(|k| to_u8(-1.0 + k as f32 * (2.0 / 7.0)))
            .collect();
        assert_eq!(g.pixels, want);
        assert_eq!(g.pixel(3, 0), &[want[3]]);
        assert_eq!(g.pixel(0, 1), &[want[4]]);
    }

    #[test]
    fn rgb_grid_interleaves_channels() {
        // 3 images of 1x2 RGB, 3 columns, pad 2. Channel c of image i is (-1, 0, 1)[c] rotated by i.
        let lv = [-1.0f32, 0.0, 1.0];
        let imgs = batch(
            3,
            3,
            1,
            2,
            |i, c, _, x| if x == 0 { lv[(c + i) % 3] } else { 2.0 },
        );
        let g = grid(&imgs, 3, 3, 1, 2, 3, 2);
        assert_eq!((g.width, g.height, g.channels), (2 + 3 * 4, 2 + 3, 3));
        let b = [0u8, 128, 255];
        for i in 0..3 {
            let x0 = 2 + i * 4;
            assert_eq!(g.pixel(x0, 2), &[b[i % 3], b[(1 + i) % 3], b[(2 + i) % 3]]);
            assert_eq!(g.pixel(x0 + 1, 2), &[255, 255, 255], "clamped 2.0");
            assert_eq!(g.pixel(x0 - 1, 2), &[PAD_VALUE; 3]);
        }
        assert_eq!(g.pixel(0, 0), &[PAD_VALUE; 3]);
        assert_eq!(g.pixel(13, 4), &[PAD_VALUE; 3]);
    }

    #[test]
    fn fewer_images_than_columns_shrinks_the_grid() {
        let imgs = batch(2, 1, 3, 3, |_, _, _, _| 1.0);
        let g = grid(&imgs, 2, 1, 3, 3, 8, 1);
        assert_eq!((g.width, g.height), (1 + 2 * 4, 1 + 4));
    }

    #[test]
    fn pairs_put_reconstruction_right_of_original() {
        let orig = batch(3, 1, 2, 2, |_, _, _, _| -1.0);
        let rec = batch(3, 1, 2, 2, |_, _, _, _| 1.0);
        let g = pairs(&orig, &rec, 3, 1, 2, 2, 2, 1);
        // 2 pairs per row -> 4 tiles per row, 2 rows
        assert_eq!((g.width, g.height), (1 + 4 * 3, 1 + 2 * 3));
        for t in 0..6 {
            let x0 = 1 + (t % 4) * 3;
            let y0 = 1 + (t / 4) * 3;
            let want = if t % 2 == 0 { 0 } else { 255 };
            assert_eq!(g.pixel(x0 + 1, y0 + 1), &[want], "tile {t}");
        }
    }

    #[test]
    fn concat_h_pads_and_promotes() {
        let a = GridImage::filled(2, 3, 1, 10);
        let b = GridImage::filled(3, 1, 3, 200);
        let c = concat_h(&a, &b, 1);
        assert_eq!((c.width, c.height, c.channels), (6, 3, 3));
        assert_eq!(c.pixel(1, 2), &[10, 10, 10]);
        assert_eq!(c.pixel(2, 0), &[PAD_VALUE; 3]);
        assert_eq!(c.pixel(3, 0), &[200, 200, 200]);
        assert_eq!(c.pixel(5, 0), &[200, 200, 200]);
        assert_eq!(c.pixel(3, 1), &[PAD_VALUE; 3]);
        let grey = concat_h(&a, &a, 0);
        assert_eq!((grey.width, grey.channels), (4, 1));
        assert!(grey.pixels.iter().all(|&p| p == 10));
    }

    #[test]
    fn png_round_trip_grey_and_rgb_non_square() {
        let imgs = batch(3, 1, 5, 7, |i, _, y, x| {
            ((i * 35 + y * 7 + x) as f32 / 52.0) - 1.0
        });
        let g = grid(&imgs, 3, 1, 5, 7, 3, 2);
        let png = encode_png(&g).unwrap();
        let back = image::load_from_memory(&png).unwrap();
        assert_eq!(
            (back.width() as usize, back.height() as usize),
            (g.width, g.height)
        );
        assert_eq!(back.color(), image::ColorType::L8);
        assert_eq!(back.into_luma8().into_raw(), g.pixels);

        let rgb = GridImage {
            width: 4,
            height: 2,
            channels: 3,
            pixels: (0..24).map(|v| v as u8 * 10).collect(),
        };
        let back = image::load_from_memory(&encode_png(&rgb).unwrap()).unwrap();
        assert_eq!((back.width(), back.height()), (4, 2));
        assert_eq!(back.color(), image::ColorType::Rgb8);
        assert_eq!(back.into_rgb8().into_raw(), rgb.pixels);
    }

    #[test]
    fn encode_png_rejects_bad_images() {
        let bad = GridImage {
            width: 2,
            height: 2,
            channels: 4,
            pixels: vec![0; 16],
        };
        assert!(matches!(encode_png(&bad), Err(LogError::InvalidImage(_))));
        let short = GridImage {
            width: 2,
            height: 2,
            channels: 1,
            pixels: vec![0; 3],
        };
        let e = encode_png(&short).unwrap_err().to_string();
        assert!(e.contains("needs 4 bytes, got 3"), "{e}");
    }

    #[test]
    fn save_png_is_atomic_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/samples.png");
        let a = GridImage::filled(3, 2, 1, 7);
        save_png(&a, &path).unwrap();
        let b = GridImage::filled(5, 4, 3, 9);
        save_png(&b, &path).unwrap();
        let back = image::open(&path).unwrap();
        assert_eq!((back.width(), back.height()), (5, 4));
        assert!(back.into_rgb8().into_raw().iter().all(|&p| p == 9));
        // no temporary file left behind
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["samples.png".to_string()]);
    }

    #[test]
    fn save_png_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let path = blocker.join("x.png"); // parent is a file
        let e = save_png(&GridImage::filled(1, 1, 1, 0), &path)
            .unwrap_err()
            .to_string();
        assert!(e.contains(&blocker.display().to_string()), "{e}");
        assert!(e.contains("os error") || e.contains("exists"), "{e}");
    }
}
