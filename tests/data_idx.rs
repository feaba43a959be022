//! IDX reading, checksums and loading on the real MNIST files (the tests' data folder, see
//! `common::data_dir`).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use ldm_run::data::files::{self, MNIST};
use ldm_run::data::{DataError, Split, idx, load};
use ldm_run::data::{DatasetConfig, DatasetName};

fn shared_mnist() -> PathBuf {
    common::data_dir().join("mnist")
}

/// MNIST file `name` gzipped: the data folder's copy, or one compressed into cargo's
/// scratch folder for tests when the data folder holds it raw.
fn shared(name: &str) -> PathBuf {
    let found = common::mnist_file(name);
    if found.extension().is_some_and(|e| e == "gz") {
        return found;
    }
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.gz"));
    if !path.exists() {
        std::fs::write(&path, common::mnist_gz(name)).unwrap();
    }
    path
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn offline(root: &Path) -> DatasetConfig {
    DatasetConfig {
        name: DatasetName::Mnist,
        root: Some(root.to_path_buf()),
        download: false,
        ..DatasetConfig::default()
    }
}

#[test]
fn reads_the_real_idx_files() {
    let train = idx::read_images(&shared(files::TRAIN_IMAGES)).unwrap();
    assert_eq!((train.count, train.rows, train.cols), (60000, 28, 28));
    assert_eq!(train.pixels.len(), 60000 * 784);
    assert_eq!(train.pixels.iter().min(), Some(&0));
    assert_eq!(train.pixels.iter().max(), Some(&255));
    // Sum of the first image's pixels (the "5"), computed independently with Python.
    let first: u32 = train.pixels[..784].iter().map(|&p| u32::from(p)).sum();
    assert_eq!(first, 27525);
    let labels = idx::read_labels(&shared(files::TRAIN_LABELS)).unwrap();
    assert_eq!(labels.len(), 60000);
    assert_eq!(labels[..5], [5, 0, 4, 1, 9]);
    idx::check_pair(&train, &labels, Path::new("a"), Path::new("b")).unwrap();

    let test = idx::read_images(&shared(files::TEST_IMAGES)).unwrap();
    assert_eq!((test.count, test.rows, test.cols), (10000, 28, 28));
    let test_labels = idx::read_labels(&shared(files::TEST_LABELS)).unwrap();
    assert_eq!(test_labels[..5], [7, 2, 1, 0, 4]);
    let ones = test_labels.iter().filter(|&&l| l == 1).count();
    assert_eq!(ones, 1135);

    // Images and labels of different splits do not pair up.
    let err = idx::check_pair(&test, &labels, Path::new("imgs"), Path::new("lbls")).unwrap_err();
    assert!(matches!(
        err,
        DataError::CountMismatch {
            images: 10000,
            labels: 60000,
            ..
        }
    ));
}

#[test]
fn checksums_of_the_shared_files_pass() {
    for f in MNIST.all() {
        let content = files::read_verified(&shared(f.name), &f).unwrap();
        assert_eq!(files::md5_hex(&content), f.md5);
    }
}

#[test]
fn a_flipped_byte_fails_verification_naming_file_and_md5s() {
    let dir = tempfile::tempdir().unwrap();
    let mut content = gunzip(&shared(files::TEST_LABELS));
    content[100] ^= 0x01;
    let bad = dir.path().join(files::TEST_LABELS);
    std::fs::write(&bad, &content).unwrap();
    let f = MNIST.test_labels;
    let err = files::read_verified(&bad, &f).unwrap_err();
    let actual = files::md5_hex(&content);
    let msg = err.to_string();
    assert!(msg.contains(&bad.display().to_string()), "{msg}");
    assert!(msg.contains(f.md5) && msg.contains(&actual), "{msg}");
    assert!(msg.contains("Delete it"), "{msg}");

    // The same through load(): the corrupt copy is reported, not silently skipped or replaced,
    // also as a .gz and also when downloading is on (it is found, so nothing is downloaded).
    std::fs::copy(
        shared(files::TEST_IMAGES),
        dir.path().join(format!("{}.gz", files::TEST_IMAGES)),
    )
    .unwrap();
    let err = load(&offline(dir.path()), Split::Test, None).unwrap_err();
    assert!(
        matches!(&err, DataError::Checksum { path, .. } if *path == bad),
        "{err}"
    );
    std::fs::remove_file(&bad).unwrap();
    let gz = dir.path().join(format!("{}.gz", files::TEST_LABELS));
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&content).unwrap();
    std::fs::write(&gz, e.finish().unwrap()).unwrap();
    let cfg = DatasetConfig {
        download: true,
        mirrors: vec!["http://127.0.0.1:9/".into()],
        ..offline(dir.path())
    };
    let err = load(&cfg, Split::Test, None).unwrap_err();
    assert!(
        matches!(&err, DataError::Checksum { path, actual: a, .. } if *path == gz && *a == actual),
        "{err}"
    );
}

#[test]
fn truncated_files_error() {
    let dir = tempfile::tempdir().unwrap();
    let content = gunzip(&shared(files::TEST_IMAGES));
    let cut = dir.path().join(files::TEST_IMAGES);
    std::fs::write(&cut, &content[..content.len() - 1000]).unwrap();
    let err = idx::read_images(&cut).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Truncated {
                expected: 7_840_000,
                actual: 7_839_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("truncated"));
    // Through load(), the checksum catches it first, naming the file.
    std::fs::copy(
        shared(files::TEST_LABELS),
        dir.path().join(format!("{}.gz", files::TEST_LABELS)),
    )
    .unwrap();
    let err = load(&offline(dir.path()), Split::Test, None).unwrap_err();
    assert!(
        matches!(&err, DataError::Checksum { path, .. } if *path == cut),
        "{err}"
    );

    // A truncated .gz is a gzip error naming the file.
    let gz_bytes = std::fs::read(shared(files::TEST_IMAGES)).unwrap();
    let gz = dir.path().join("cut.gz");
    std::fs::write(&gz, &gz_bytes[..gz_bytes.len() / 2]).unwrap();
    let err = idx::read_images(&gz).unwrap_err();
    assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    assert!(err.to_string().contains("cut.gz"));
}

#[test]
fn raw_copies_load_like_gz() {
    let dir = tempfile::tempdir().unwrap();
    for name in [files::TEST_IMAGES, files::TEST_LABELS] {
        std::fs::write(dir.path().join(name), gunzip(&shared(name))).unwrap();
    }
    let raw = load(&offline(dir.path()), Split::Test, None).unwrap();
    let gz = load(&offline(&shared_mnist()), Split::Test, None).unwrap();
    assert_eq!(raw.len(), 10000);
    assert_eq!(raw, gz);
}

#[test]
fn loads_mnist_resized_to_32() {
    let train = load(&offline(&shared_mnist()), Split::Train, None).unwrap();
    assert_eq!(train.len(), 60000);
    assert_eq!(
        (train.channels, train.size, train.image_len()),
        (1, 32, 1024)
    );
    assert_eq!(train.images.len(), 60000 * 1024);
    assert_eq!(train.labels[..5], [5, 0, 4, 1, 9]);
    assert_eq!(train.class_names[0], "zero");
    assert_eq!(train.class_names[9], "nine");
    let (lo, hi) = train
        .images
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    assert_eq!(lo, -1.0);
    assert!(hi <= 1.0 && hi > 0.99, "{hi}");
    // Reference values from torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear",
    // align_corners=False) / 255 * 2 - 1 on the first training image.
    let img = train.image(0);
    for (y, x, want) in [
        (5, 17, -0.955_882_4),
        (10, 10, 0.307_169_1),
        (16, 16, 0.802_420_4),
        (20, 9, -1.0),
    ] {
        let got = img[y * 32 + x];
        assert!((got - want).abs() < 1e-5, "({y},{x}): {got} vs {want}");
    }
    let sum: f32 = img.iter().sum();
    assert!((sum - -740.721_6).abs() < 1e-2, "{sum}");
    let sum1: f32 = train.image(1).iter().sum();
    assert!((sum1 - -703.165_1).abs() < 1e-2, "{sum1}");

    let test = load(&offline(&shared_mnist()), Split::Test, None).unwrap();
    assert_eq!(test.len(), 10000);
    assert_eq!(test.labels[..3], [7, 2, 1]);
}

#[test]
fn train_limit_and_native_size() {
    let cfg = DatasetConfig {
        train_limit: 100,
        image_size: 28,
        ..offline(&shared_mnist())
    };
    let train = load(&cfg, Split::Train, None).unwrap();
    assert_eq!(train.len(), 100);
    assert_eq!(train.images.len(), 100 * 784);
    assert_eq!(train.labels[..5], [5, 0, 4, 1, 9]);
    // 28 -> 28 is the identity: pixel p becomes p / 255 * 2 - 1.
    let raw = idx::read_images(&shared(files::TRAIN_IMAGES)).unwrap();
    for (i, &p) in raw.pixels[..100 * 784].iter().enumerate() {
        let want = f32::from(p) / 255.0 * 2.0 - 1.0;
        assert!((train.images[i] - want).abs() < 1e-6);
    }
    // The limit is for training only.
    assert_eq!(load(&cfg, Split::Test, None).unwrap().len(), 10000);
    let (x, y) = train.gather(&[3, 0]);
    assert_eq!(y, vec![1, 5]);
    assert_eq!(x[..784], *train.image(3));
}

#[test]
fn env_data_dir_is_used_when_root_is_unset() {
    // LDM_DATA_DIR=<dir> means <dir>/mnist. Passed in, not set in the process environment.
    let dir = tempfile::tempdir().unwrap();
    let mnist = dir.path().join("mnist");
    std::fs::create_dir(&mnist).unwrap();
    for name in [files::TEST_IMAGES, files::TEST_LABELS] {
        std::fs::copy(shared(name), mnist.join(format!("{name}.gz"))).unwrap();
    }
    let cfg = DatasetConfig {
        download: false,
        ..DatasetConfig::default()
    };
    let env = dir.path().to_str().unwrap();
    assert_eq!(load(&cfg, Split::Test, Some(env)).unwrap().len(), 10000);
    // The train files are not there: the error says where it looked.
    let err = load(&cfg, Split::Train, Some(env)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&mnist.display().to_string()), "{msg}");
    assert!(
        msg.contains("train-images-idx3-ubyte, train-labels-idx1-ubyte"),
        "{msg}"
    );
    assert!(msg.contains("dataset.download = false"), "{msg}");
}
