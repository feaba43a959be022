//! Captioned `image_folder` data sets (metadata.jsonl / metadata.csv) built in a temporary
//! folder: RGB and grey, PNG and JPEG, odd sizes, and every error a user can make.

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, Rgb, RgbImage};
use ldm_run::data::{DataError, Split, load, preflight};
use ldm_run::data::{DatasetConfig, DatasetName};

fn cfg(root: &Path, channels: usize, image_size: usize) -> DatasetConfig {
    DatasetConfig {
        name: DatasetName::ImageFolder,
        root: Some(root.to_path_buf()),
        channels,
        image_size,
        download: false,
        ..DatasetConfig::default()
    }
}

fn unit(v: u8) -> f32 {
    f32::from(v) / 255.0 * 2.0 - 1.0
}

fn write(root: &Path, rel: &str, text: &str) -> PathBuf {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

fn save_rgb(root: &Path, rel: &str, img: &RgbImage) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

const RED: [u8; 3] = [255, 0, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const WHITE: [u8; 3] = [255, 255, 255];
const BLACK: [u8; 3] = [0, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];

/// `w` x `h` with the centred square white, a black pixel at its top-left corner and a green
/// one at its bottom-right, and the excess of the longer side red before it, blue after it.
fn pattern(w: u32, h: u32) -> RgbImage {
    let side = w.min(h);
    let (left, top) = ((w - side) / 2, (h - side) / 2);
    RgbImage::from_fn(w, h, |x, y| {
        let (inside_x, inside_y) = (x >= left && x < left + side, y >= top && y < top + side);
        Rgb(match (inside_x && inside_y, x, y) {
            (true, x, y) if x == left && y == top => BLACK,
            (true, x, y) if x == left + side - 1 && y == top + side - 1 => GREEN,
            (true, ..) if (x - left + y - top) % 2 == 0 => WHITE,
            (true, ..) => [128, 128, 128],
            _ if x < left || y < top => RED,
            _ => BLUE,
        })
    })
}

/// The RGB pixel at (row, col) of image `i`.
fn pixel(d: &ldm_run::data::Dataset, i: usize, row: usize, col: usize) -> [f32; 3] {
    let img = d.image(i);
    let plane = d.size * d.size;
    [0, 1, 2].map(|c| img[c * plane + row * d.size + col])
}

/// train: a wide 37x23 and a tall 23x37 PNG, a 23x23 JPEG and a grey PNG; test: one PNG.
fn build() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    save_rgb(root, "train/wide.png", &pattern(37, 23));
    save_rgb(root, "train/tall.png", &pattern(23, 37));
    save_rgb(
        root,
        "train/photos/flat.jpg",
        &RgbImage::from_pixel(23, 23, Rgb([40, 120, 200])),
    );
    GrayImage::from_pixel(30, 23, Luma([77]))
        .save(root.join("train/grey.png"))
        .unwrap();
    write(
        root,
        "train/metadata.jsonl",
        concat!(
            "{\"file_name\": \"wide.png\", \"text\": \"a wide pattern\", \"group\": \"pattern\"}\n",
            "{\"file_name\": \"tall.png\", \"text\": \"a tall pattern\", \"group\": \"pattern\"}\n",
            "\n",
            "{\"file_name\": \"photos/flat.jpg\", \"text\": \"a flat blue\", \"group\": \"flat\"}\n",
            "{\"file_name\": \"grey.png\", \"text\": \"grey\", \"group\": \"flat\", \"alt\": \"slate\"}\n",
        ),
    );
    save_rgb(root, "test/one.png", &RgbImage::from_pixel(5, 9, Rgb(BLUE)));
    write(
        root,
        "test/metadata.jsonl",
        "{\"file_name\": \"one.png\", \"text\": \"blue\", \"group\": \"flat\"}\n",
    );
    dir
}

/// `c` with classes from the `group` column.
fn grouped(c: &DatasetConfig) -> DatasetConfig {
    DatasetConfig {
        label_column: Some("group".into()),
        ..c.clone()
    }
}

#[test]
fn crops_the_centred_square_of_odd_sizes() {
    let dir = build();
    let d = load(&grouped(&cfg(dir.path(), 3, 23)), Split::Train, None).unwrap();
    assert_eq!((d.len(), d.channels, d.size), (4, 3, 23));
    for i in [0, 1] {
        // 23 -> 23: the square itself, pixel for pixel; nothing red or blue survives.
        assert_eq!(pixel(&d, i, 0, 0), BLACK.map(unit), "image {i}");
        assert_eq!(pixel(&d, i, 22, 22), GREEN.map(unit), "image {i}");
        assert_eq!(pixel(&d, i, 0, 1), [unit(128); 3], "image {i}");
        assert_eq!(pixel(&d, i, 1, 1), WHITE.map(unit), "image {i}");
        for r in 0..23 {
            for c in 0..23 {
                let p = pixel(&d, i, r, c);
                assert!(
                    p != RED.map(unit) && p != BLUE.map(unit),
                    "image {i} at {r},{c}"
                );
            }
        }
    }
    // The grey PNG as RGB: three equal planes.
    assert!(d.image(3).iter().all(|&v| v == unit(77)));
}

#[test]
fn shrinks_by_area_and_reads_jpeg() {
    let dir = build();
    // 23 -> 1: the mean of the whole square.
    let d = load(&grouped(&cfg(dir.path(), 3, 1)), Split::Train, None).unwrap();
    // 265 pixels of even x + y, two of them the black and green corners; 264 of odd.
    let (white, grey) = (263, 264);
    let mean = |corner: f32| (white as f32 * 255.0 + grey as f32 * 128.0 + corner) / 529.0;
    let want = [mean(0.0), mean(255.0), mean(0.0)].map(|v| v / 255.0 * 2.0 - 1.0);
    for i in [0, 1] {
        let got = pixel(&d, i, 0, 0);
        for c in 0..3 {
            assert!(
                (got[c] - want[c]).abs() < 1e-4,
                "image {i}: {got:?} vs {want:?}"
            );
        }
    }
    // JPEG is lossy: a flat colour comes back within a few levels.
    let jpeg = pixel(&d, 2, 0, 0);
    for (got, want) in jpeg.iter().zip([40u8, 120, 200]) {
        assert!((got - unit(want)).abs() < 4.0 / 127.5, "{jpeg:?}");
    }
}

#[test]
fn captions_and_labels() {
    let dir = build();
    // Default columns: no label column, but train/ has a sub-folder (photos), so classes are
    // folders; files outside them are refused.
    let err = load(&cfg(dir.path(), 1, 8), Split::Train, None).unwrap_err();
    assert!(
        matches!(&err, DataError::UnknownLabel { line: 1, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("line 1: the folder of file_name \"wide.png\" is not among the training classes (photos)"),
        "{err}"
    );

    let d = load(&grouped(&cfg(dir.path(), 1, 8)), Split::Train, None).unwrap();
    assert_eq!(d.class_names, ["flat", "pattern"]);
    assert_eq!(d.labels, [1, 1, 0, 0]);
    assert_eq!(
        d.captions.as_deref().unwrap(),
        ["a wide pattern", "a tall pattern", "a flat blue", "grey"]
    );
    assert_eq!((d.channels, d.image_len()), (1, 64));
    assert!(d.image(3).iter().all(|&v| (v - unit(77)).abs() < 1e-5));

    let t = load(&grouped(&cfg(dir.path(), 3, 8)), Split::Test, None).unwrap();
    assert_eq!((t.len(), t.labels.as_slice()), (1, &[0][..]));
    assert_eq!(t.caption(0), Some("blue"));
    assert_eq!(t.class_names, ["flat", "pattern"]);

    // Another caption column, and the limit.
    let alt = DatasetConfig {
        caption_column: "alt".into(),
        ..cfg(dir.path(), 1, 8)
    };
    let err = load(&alt, Split::Train, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("line 1: the row of wide.png has no caption (column `alt`)"),
        "{err}"
    );
    let c = DatasetConfig {
        train_limit: 2,
        ..cfg(dir.path(), 3, 8)
    };
    let d = load(&grouped(&c), Split::Train, None).unwrap();
    assert_eq!((d.len(), d.images.len()), (2, 2 * 3 * 64));
    assert_eq!(d.captions.unwrap().len(), 2);
}

#[test]
fn class_sub_folders_with_captions_and_no_classes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    save_rgb(
        root,
        "train/cat/a.png",
        &RgbImage::from_pixel(3, 3, Rgb(RED)),
    );
    save_rgb(
        root,
        "train/ant/b.jpg",
        &RgbImage::from_pixel(8, 4, Rgb(BLUE)),
    );
    write(
        root,
        "train/metadata.csv",
        "file_name,text\ncat/a.png,\"a red cat, sitting\"\nant/b.jpg,an ant\n",
    );
    let d = load(&cfg(root, 3, 2), Split::Train, None).unwrap();
    assert_eq!(d.class_names, ["ant", "cat"]);
    assert_eq!(d.labels, [1, 0]);
    assert_eq!(d.caption(0), Some("a red cat, sitting"));
    assert_eq!(d.image(0)[..4], [1.0; 4]);

    // No sub-folders and no label column: no classes, every label 0.
    let flat = tempfile::tempdir().unwrap();
    save_rgb(
        flat.path(),
        "train/x.png",
        &RgbImage::from_pixel(2, 2, Rgb(RED)),
    );
    write(
        flat.path(),
        "train/metadata.csv",
        "text,file_name\nred,x.png\n",
    );
    let d = load(&cfg(flat.path(), 3, 2), Split::Train, None).unwrap();
    assert!(d.class_names.is_empty());
    assert_eq!((d.labels.as_slice(), d.caption(0)), (&[0][..], Some("red")));
    // A captioned train split needs a captioned test split: refused before a run starts.
    let err = preflight(&cfg(flat.path(), 3, 2), None).unwrap_err();
    assert!(
        err.to_string().contains("needs one in each split folder"),
        "{err}"
    );
    std::fs::create_dir_all(flat.path().join("test")).unwrap();
    let err = load(&cfg(flat.path(), 3, 2), Split::Test, None).unwrap_err();
    assert!(matches!(err, DataError::MissingMetadata { .. }), "{err}");
    assert!(
        err.to_string().contains("needs one in each split folder"),
        "{err}"
    );
}

#[test]
fn every_error_names_the_file_and_row() {
    let dir = build();
    let root = dir.path();
    let c = cfg(root, 3, 4);
    let meta = root.join("train/metadata.jsonl");
    let good = std::fs::read_to_string(&meta).unwrap();
    let error = |text: &str| {
        std::fs::write(&meta, text).unwrap();
        load(&grouped(&c), Split::Train, None).unwrap_err()
    };

    // A row whose file is missing: named, with the row's line.
    let err = error(&good.replace("tall.png", "gone.png"));
    assert!(
        matches!(&err, DataError::MissingImage { line: 2, path, .. } if *path == root.join("train/gone.png")),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("{}, line 2:", meta.display())),
        "{err}"
    );
    // Preflight finds it too.
    let pre = preflight(&grouped(&c), None).unwrap_err();
    assert!(
        matches!(pre, DataError::MissingImage { line: 2, .. }),
        "{pre}"
    );

    // A row without caption.
    let err = error(&good.replace("\"text\": \"a flat blue\", ", ""));
    assert!(
        matches!(&err, DataError::MetadataRow { line: 4, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("the row of photos/flat.jpg has no caption (column `text`)")
    );

    // A line that is not JSON.
    let err = error(&good.replace("{\"file_name\": \"tall.png\"", "{file_name: \"tall.png\""));
    assert!(
        matches!(&err, DataError::MetadataRow { line: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("not a JSON object"), "{err}");

    // An unreadable image: which file, which row.
    std::fs::write(&meta, &good).unwrap();
    let bad = root.join("train/photos/flat.jpg");
    std::fs::write(&bad, b"not a jpeg at all").unwrap();
    let err = load(&grouped(&c), Split::Train, None).unwrap_err();
    assert!(
        matches!(&err, DataError::UnreadableImage { line: 4, path, .. } if *path == bad),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("is not a readable PNG or JPEG image"),
        "{err}"
    );
    // Preflight decodes every image, so a run refuses it before it writes anything.
    let pre = preflight(&grouped(&c), None).unwrap_err();
    assert!(
        matches!(&pre, DataError::UnreadableImage { line: 4, path, .. } if *path == bad),
        "{pre}"
    );
    // A JPEG cut short.
    let mut jpeg = Vec::new();
    RgbImage::from_pixel(16, 16, Rgb(RED))
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    std::fs::write(&bad, &jpeg[..jpeg.len() / 3]).unwrap();
    let err = load(&grouped(&c), Split::Train, None).unwrap_err();
    assert!(
        matches!(&err, DataError::UnreadableImage { line: 4, .. }),
        "{err}"
    );
    let pre = preflight(&grouped(&c), None).unwrap_err();
    assert!(
        matches!(&pre, DataError::UnreadableImage { line: 4, .. }),
        "{pre}"
    );

    // A test row whose class the training rows never use.
    let test_meta = root.join("test/metadata.jsonl");
    std::fs::write(
        &test_meta,
        "{\"file_name\": \"one.png\", \"text\": \"x\", \"group\": \"owl\"}\n",
    )
    .unwrap();
    let err = load(&grouped(&c), Split::Test, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("line 1: group `owl` is not among the training classes (flat, pattern)"),
        "{err}"
    );

    // Both metadata kinds at once.
    write(root, "train/metadata.csv", "file_name,text\n");
    let err = load(&grouped(&c), Split::Train, None).unwrap_err();
    assert!(matches!(err, DataError::TwoMetadataFiles { .. }), "{err}");
    std::fs::remove_file(&meta).unwrap();

    // A CSV row with too many fields, and an empty metadata file.
    write(
        root,
        "train/metadata.csv",
        "file_name,text,group\nwide.png,w,pattern\ntall.png,t,pattern,extra\n",
    );
    let err = load(&grouped(&c), Split::Train, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("metadata.csv, line 3: bad CSV row: 4 fields where the header has 3"),
        "{err}"
    );
    write(root, "train/metadata.csv", "file_name,text,group\n");
    let err = load(&grouped(&c), Split::Train, None).unwrap_err();
    assert!(matches!(err, DataError::EmptyMetadata { .. }), "{err}");
}
