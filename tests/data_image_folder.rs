//! `image_folder` data sets built from tiny PNGs in a temporary folder.

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, Rgb, RgbImage};
use ldm_run::data::{DataError, Split, load};
use ldm_run::data::{DatasetConfig, DatasetName};

fn cfg(root: Option<&Path>, channels: usize) -> DatasetConfig {
    DatasetConfig {
        name: DatasetName::ImageFolder,
        root: root.map(Path::to_path_buf),
        channels,
        image_size: 4,
        download: false,
        ..DatasetConfig::default()
    }
}

fn unit(v: f32) -> f32 {
    v / 255.0 * 2.0 - 1.0
}

fn close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-5, "at {i}: {g} vs {w}\n{got:?}");
    }
}

const CAT: [u8; 3] = [200, 100, 50];
const BEE: [u8; 3] = [0, 0, 255];

/// train/{cat,ant,bee} (classes sorted: ant, bee, cat) and test/{bee,ant}.
fn build() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = |rel: &str| -> PathBuf {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        path
    };
    RgbImage::from_pixel(4, 4, Rgb(CAT))
        .save(p("train/cat/a.png"))
        .unwrap();
    RgbImage::from_pixel(6, 3, Rgb(CAT))
        .save(p("train/cat/b.png"))
        .unwrap();
    // A grey 2x2 gradient, 8-bit greyscale PNG.
    GrayImage::from_raw(2, 2, vec![0, 10, 20, 30])
        .unwrap()
        .save(p("train/ant/x.png"))
        .unwrap();
    RgbImage::from_pixel(5, 5, Rgb(BEE))
        .save(p("train/bee/y.png"))
        .unwrap();
    GrayImage::from_pixel(3, 3, Luma([255]))
        .save(p("test/bee/z.png"))
        .unwrap();
    GrayImage::from_pixel(3, 3, Luma([0]))
        .save(p("test/ant/w.png"))
        .unwrap();
    // Hidden files are ignored.
    std::fs::write(p("train/cat/.DS_Store"), b"junk").unwrap();
    dir
}

/// PyTorch's bilinear 2x2 -> 4x4 (align_corners=False) of [[0, 10], [20, 30]].
#[rustfmt::skip]
const GRADIENT_4X4: [f32; 16] = [
    0.0, 2.5, 7.5, 10.0,
    5.0, 7.5, 12.5, 15.0,
    15.0, 17.5, 22.5, 25.0,
    20.0, 22.5, 27.5, 30.0,
];

#[test]
fn loads_rgb() {
    let dir = build();
    let d = load(&cfg(Some(dir.path()), 3), Split::Train, None).unwrap();
    assert_eq!(d.class_names, ["ant", "bee", "cat"]);
    assert_eq!((d.len(), d.channels, d.size, d.image_len()), (4, 3, 4, 48));
    // Round-robin over classes: ant/x, bee/y, cat/a, then cat/b.
    assert_eq!(d.labels, [0, 1, 2, 2]);
    let grad: Vec<f32> = GRADIENT_4X4.iter().map(|&v| unit(v)).collect();
    for c in 0..3 {
        close(&d.image(0)[c * 16..(c + 1) * 16], &grad);
    }
    for i in [2, 3] {
        let want: Vec<f32> = CAT.iter().flat_map(|&v| [unit(f32::from(v)); 16]).collect();
        close(d.image(i), &want);
    }
    let want: Vec<f32> = BEE.iter().flat_map(|&v| [unit(f32::from(v)); 16]).collect();
    close(d.image(1), &want);

    let t = load(&cfg(Some(dir.path()), 3), Split::Test, None).unwrap();
    assert_eq!(t.class_names, ["ant", "bee", "cat"]);
    assert_eq!(t.labels, [0, 1]);
    assert!(t.image(0).iter().all(|&v| v == -1.0));
    assert!(t.image(1).iter().all(|&v| v == 1.0));
}

#[test]
fn loads_grey_with_pil_luma() {
    let dir = build();
    let d = load(&cfg(Some(dir.path()), 1), Split::Train, None).unwrap();
    assert_eq!((d.len(), d.channels, d.image_len()), (4, 1, 16));
    let grad: Vec<f32> = GRADIENT_4X4.iter().map(|&v| unit(v)).collect();
    close(d.image(0), &grad);
    // PIL's convert("L"): 200*0.299 + 100*0.587 + 50*0.114 = 124.2 -> 124; 255*0.114 -> 29.
    close(d.image(2), &[unit(124.0); 16]);
    close(d.image(3), &[unit(124.0); 16]);
    close(d.image(1), &[unit(29.0); 16]);
}

#[test]
fn train_limit_keeps_the_first_images() {
    let dir = build();
    let c = DatasetConfig {
        train_limit: 2,
        ..cfg(Some(dir.path()), 1)
    };
    let d = load(&c, Split::Train, None).unwrap();
    assert_eq!(d.labels, [0, 1]);
    assert_eq!(d.images.len(), 2 * 16);
    assert_eq!(d.class_names.len(), 3);
    assert_eq!(load(&c, Split::Test, None).unwrap().len(), 2);
}

#[test]
fn clear_errors() {
    let err = load(&cfg(None, 1), Split::Train, None).unwrap_err();
    assert!(matches!(err, DataError::NoRoot), "{err}");
    assert!(err.to_string().contains("dataset.root is required"));

    let dir = build();
    let missing = dir.path().join("nope");
    let err = load(&cfg(Some(&missing), 1), Split::Train, None).unwrap_err();
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(matches!(err, DataError::MissingFolder { .. }));

    let err = load(&cfg(Some(dir.path()), 2), Split::Train, None).unwrap_err();
    assert!(err.to_string().starts_with("dataset.channels"), "{err}");

    // A class folder with no PNGs.
    let dog = dir.path().join("train/dog");
    std::fs::create_dir(&dog).unwrap();
    let err = load(&cfg(Some(dir.path()), 1), Split::Train, None).unwrap_err();
    assert!(
        matches!(&err, DataError::EmptyClass { path } if *path == dog),
        "{err}"
    );
    assert!(err.to_string().contains("holds no PNG files"), "{err}");
    std::fs::remove_dir(&dog).unwrap();

    // A file that is not a PNG, whatever its name says.
    let bad = dir.path().join("train/ant/z.png");
    std::fs::write(&bad, b"hello").unwrap();
    let err = load(&cfg(Some(dir.path()), 1), Split::Train, None).unwrap_err();
    assert!(
        matches!(&err, DataError::NotPng { path, .. } if *path == bad),
        "{err}"
    );
    assert!(err.to_string().contains("only PNG files are read"), "{err}");
    // A PNG signature followed by garbage.
    let mut png = std::fs::read(dir.path().join("train/ant/x.png")).unwrap();
    png.truncate(20);
    std::fs::write(&bad, &png).unwrap();
    let err = load(&cfg(Some(dir.path()), 1), Split::Train, None).unwrap_err();
    assert!(
        matches!(&err, DataError::NotPng { path, .. } if *path == bad),
        "{err}"
    );
    std::fs::remove_file(&bad).unwrap();

    // A test class that has no training folder.
    let owl = dir.path().join("test/owl");
    std::fs::create_dir(&owl).unwrap();
    GrayImage::from_pixel(2, 2, Luma([1]))
        .save(owl.join("o.png"))
        .unwrap();
    let err = load(&cfg(Some(dir.path()), 1), Split::Test, None).unwrap_err();
    assert!(
        matches!(&err, DataError::UnknownClass { path, .. } if *path == owl),
        "{err}"
    );
    assert!(err.to_string().contains("ant, bee, cat"), "{err}");
    std::fs::remove_dir_all(&owl).unwrap();

    // No test split at all.
    std::fs::remove_dir_all(dir.path().join("test")).unwrap();
    let err = load(&cfg(Some(dir.path()), 1), Split::Test, None).unwrap_err();
    assert!(
        matches!(&err, DataError::MissingFolder { path, .. } if path.ends_with("test")),
        "{err}"
    );
    // Training still loads.
    assert_eq!(
        load(&cfg(Some(dir.path()), 1), Split::Train, None)
            .unwrap()
            .len(),
        4
    );
}
