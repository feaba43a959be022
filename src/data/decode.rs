//! Image files to planar 8-bit pixels of 1 (grey) or 3 (RGB) channels.
//!
//! The format is told by the file's first bytes, never by its name. Grey is luma with PIL's
//! weights (`convert("L")`: `L = R*299/1000 + G*587/1000 + B*114/1000`, rounded); alpha is
//! dropped, as PIL's `convert("RGB")` drops it, so transparent pixels keep whatever colour
//! they store: composite such images onto the background you want before training on them.

use image::ImageFormat;

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
const JPEG_SIGNATURE: [u8; 3] = [0xff, 0xd8, 0xff];

/// The formats class folders read.
pub const PNG: &[ImageFormat] = &[ImageFormat::Png];
/// The formats captioned folders read.
pub const PNG_OR_JPEG: &[ImageFormat] = &[ImageFormat::Png, ImageFormat::Jpeg];

/// A decoded image: `channels` planes of `height` rows of `width` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planar {
    pub pixels: Vec<u8>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

fn signature(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(&PNG_SIGNATURE) {
        Some(ImageFormat::Png)
    } else if bytes.starts_with(&JPEG_SIGNATURE) {
        Some(ImageFormat::Jpeg)
    } else {
        None
    }
}

fn names(formats: &[ImageFormat]) -> String {
    let names: Vec<&str> = formats
        .iter()
        .map(|f| match f {
            ImageFormat::Jpeg => "JPEG",
            _ => "PNG",
        })
        .collect();
    names.join(" or ")
}

/// PIL's `convert("L")`: fixed point ITU-R 601-2 luma, rounded.
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    let (r, g, b) = (u32::from(r), u32::from(g), u32::from(b));
    ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
}

/// Decodes `bytes`, one of `formats`, to `channels` (1 or 3) planes. The error is the reason
/// the bytes are not such an image; callers add the file (and row) it came from.
pub fn decode(bytes: &[u8], formats: &[ImageFormat], channels: usize) -> Result<Planar, String> {
    let format = signature(bytes)
        .filter(|f| formats.contains(f))
        .ok_or_else(|| format!("it does not start with the {} signature", names(formats)))?;
    let rgb = image::load_from_memory_with_format(bytes, format)
        .map_err(|e| e.to_string())?
        .to_rgb8();
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    if width == 0 || height == 0 {
        return Err("it has no pixels".into());
    }
    let px = rgb.as_raw();
    let pixels: Vec<u8> = if channels == 1 {
        px.chunks_exact(3).map(|p| luma(p[0], p[1], p[2])).collect()
    } else {
        (0..3)
            .flat_map(|c| px.iter().skip(c).step_by(3).copied())
            .collect()
    };
    Ok(Planar {
        pixels,
        channels: if channels == 1 { 1 } else { 3 },
        height,
        width,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgba, RgbaImage};

    fn encode(img: &RgbaImage, format: ImageFormat) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        match format {
            ImageFormat::Jpeg => image::DynamicImage::ImageRgba8(img.clone())
                .to_rgb8()
                .write_to(&mut out, format),
            _ => img.write_to(&mut out, format),
        }
        .unwrap();
        out.into_inner()
    }

    #[test]
    fn png_planes_and_alpha_dropped() {
        let mut img = RgbaImage::from_pixel(3, 2, Rgba([10, 20, 30, 255]));
        img.put_pixel(2, 1, Rgba([200, 100, 50, 0]));
        let p = decode(&encode(&img, ImageFormat::Png), PNG, 3).unwrap();
        assert_eq!((p.channels, p.height, p.width), (3, 2, 3));
        assert_eq!(p.pixels[..5], [10; 5]);
        assert_eq!(p.pixels[6..11], [20; 5]);
        // The transparent pixel keeps its colour: last of each plane.
        assert_eq!((p.pixels[5], p.pixels[11], p.pixels[17]), (200, 100, 50));
        let g = decode(&encode(&img, ImageFormat::Png), PNG, 1).unwrap();
        // 200*0.299 + 100*0.587 + 50*0.114 = 124.2 -> 124.
        assert_eq!((g.channels, g.pixels[5]), (1, 124));
    }

    #[test]
    fn jpeg_only_where_allowed() {
        let img = RgbaImage::from_pixel(8, 8, Rgba([0, 128, 255, 255]));
        let jpeg = encode(&img, ImageFormat::Jpeg);
        let p = decode(&jpeg, PNG_OR_JPEG, 3).unwrap();
        for (c, want) in [0u8, 128, 255].iter().enumerate() {
            let plane = &p.pixels[c * 64..(c + 1) * 64];
            assert!(plane.iter().all(|&v| v.abs_diff(*want) <= 3), "{plane:?}");
        }
        let err = decode(&jpeg, PNG, 3).unwrap_err();
        assert_eq!(err, "it does not start with the PNG signature");
        let err = decode(b"GIF89a", PNG_OR_JPEG, 3).unwrap_err();
        assert_eq!(err, "it does not start with the PNG or JPEG signature");
        let err = decode(&jpeg[..40], PNG_OR_JPEG, 3).unwrap_err();
        assert!(!err.is_empty());
    }
}
