//! IDX files (the MNIST format): big-endian header, then unsigned bytes.
//!
//! Images: magic 0x00000803, count, rows, cols, then count*rows*cols pixels.
//! Labels: magic 0x00000801, count, then count labels.
//! Either may be gzip-compressed; that is detected by the gzip magic (1f 8b), not the file name.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::error::DataError;

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Images of an IDX file: `count` images of `rows` x `cols` bytes, row-major, one after another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Whether `bytes` start with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// Decompresses `bytes` if they are gzip, else returns them as they are. `path` names them in errors.
pub fn decompress(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>, DataError> {
    if !is_gzip(&bytes) {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
    MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut out)
        .map_err(|source| DataError::Gzip {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(out)
}

/// Reads a file whole and decompresses it if it is gzip.
pub fn read_decompressed(path: &Path) -> Result<Vec<u8>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io("read", path, e))?;
    decompress(bytes, path)
}

fn header(bytes: &[u8], words: usize, path: &Path) -> Result<Vec<u32>, DataError> {
    let need = 4 * words;
    if bytes.len() < need {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: need as u64,
            actual: bytes.len() as u64,
        });
    }
    Ok(bytes[..need]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn check_magic(
    found: u32,
    expected: u32,
    what: &'static str,
    path: &Path,
) -> Result<(), DataError> {
    if found == expected {
        Ok(())
    } else {
        Err(DataError::BadMagic {
            path: path.to_path_buf(),
            what,
            expected,
            found,
        })
    }
}

fn check_len(body: &[u8], expected: u64, path: &Path) -> Result<(), DataError> {
    if body.len() as u64 == expected {
        Ok(())
    } else {
        Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected,
            actual: body.len() as u64,
        })
    }
}

/// Parses decompressed IDX image bytes. `path` names them in errors.
pub fn parse_images(bytes: &[u8], path: &Path) -> Result<IdxImages, DataError> {
    // The magic alone first, so a labels file given as images says "bad magic", not "truncated".
    let magic = header(bytes, 1, path)?[0];
    check_magic(magic, IMAGES_MAGIC, "images", path)?;
    let h = header(bytes, 4, path)?;
    let (count, rows, cols) = (h[1] as u64, h[2] as u64, h[3] as u64);
    let body = &bytes[16..];
    // Saturating: an absurd header cannot overflow, it just fails the length check.
    let expected = count.saturating_mul(rows).saturating_mul(cols);
    check_len(body, expected, path)?;
    Ok(IdxImages {
        count: count as usize,
        rows: rows as usize,
        cols: cols as usize,
        pixels: body.to_vec(),
    })
}

/// Parses decompressed IDX label bytes. `path` names them in errors.
pub fn parse_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>, DataError> {
    let magic = header(bytes, 1, path)?[0];
    check_magic(magic, LABELS_MAGIC, "labels", path)?;
    let count = header(bytes, 2, path)?[1] as u64;
    let body = &bytes[8..];
    check_len(body, count, path)?;
    Ok(body.to_vec())
}

/// Reads an IDX images file, raw or gzip.
pub fn read_images(path: &Path) -> Result<IdxImages, DataError> {
    parse_images(&read_decompressed(path)?, path)
}

/// Reads an IDX labels file, raw or gzip.
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    parse_labels(&read_decompressed(path)?, path)
}

/// Checks that an images file and a labels file hold the same number of items.
pub fn check_pair(
    images: &IdxImages,
    labels: &[u8],
    images_path: &Path,
    labels_path: &Path,
) -> Result<(), DataError> {
    if images.count == labels.len() {
        Ok(())
    } else {
        Err(DataError::CountMismatch {
            images_path: images_path.to_path_buf(),
            labels_path: labels_path.to_path_buf(),
            images: images.count,
            labels: labels.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn images_bytes(count: u32, rows: u32, cols: u32) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [IMAGES_MAGIC, count, rows, cols] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        b.extend((0..count * rows * cols).map(|i| (i % 251) as u8));
        b
    }

    fn labels_bytes(labels: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [LABELS_MAGIC, labels.len() as u32] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        b.extend_from_slice(labels);
        b
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn parses_images_and_labels() {
        let p = Path::new("x");
        let im = parse_images(&images_bytes(3, 2, 5), p).unwrap();
        assert_eq!((im.count, im.rows, im.cols), (3, 2, 5));
        assert_eq!(im.pixels.len(), 30);
        assert_eq!(im.pixels[29], 29);
        assert_eq!(
            parse_labels(&labels_bytes(&[7, 1, 9]), p).unwrap(),
            vec![7, 1, 9]
        );
        check_pair(&im, &[7, 1, 9], p, p).unwrap();
    }

    #[test]
    fn gzip_is_detected_by_content() {
        let raw = images_bytes(2, 3, 3);
        let p = Path::new("no-gz-suffix");
        assert!(!is_gzip(&raw));
        assert!(is_gzip(&gz(&raw)));
        assert_eq!(decompress(gz(&raw), p).unwrap(), raw);
        assert_eq!(decompress(raw.clone(), p).unwrap(), raw);
    }

    #[test]
    fn broken_gzip_names_the_file() {
        let mut g = gz(&images_bytes(20, 8, 8));
        g.truncate(g.len() / 2);
        let err = decompress(g, Path::new("/d/train-images-idx3-ubyte.gz")).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }));
        assert!(
            err.to_string().contains("/d/train-images-idx3-ubyte.gz"),
            "{err}"
        );
    }

    #[test]
    fn bad_magic_truncation_and_count_mismatch() {
        let p = Path::new("f");
        let err = parse_images(&labels_bytes(&[1, 2]), p).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::BadMagic {
                    found: 0x801,
                    expected: 0x803,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("0x00000801"), "{err}");
        let err = parse_labels(&images_bytes(1, 1, 1), p).unwrap_err();
        assert!(matches!(err, DataError::BadMagic { found: 0x803, .. }));

        let mut b = images_bytes(4, 3, 3);
        b.truncate(b.len() - 5);
        let err = parse_images(&b, p).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::Truncated {
                    expected: 36,
                    actual: 31,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("truncated"));
        let err = parse_images(&b[..10], p).unwrap_err();
        assert!(matches!(
            err,
            DataError::Truncated {
                expected: 16,
                actual: 10,
                ..
            }
        ));
        let mut l = labels_bytes(&[1, 2, 3]);
        l.push(0);
        let err = parse_labels(&l, p).unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
        assert!(matches!(
            parse_labels(&[], p),
            Err(DataError::Truncated { .. })
        ));

        let im = parse_images(&images_bytes(3, 2, 2), p).unwrap();
        let err = check_pair(&im, &[1, 2], Path::new("imgs"), Path::new("lbls")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("imgs holds 3 images") && msg.contains("lbls holds 2 labels"),
            "{msg}"
        );
    }
}
