//! The CIFAR-10 loader on synthetic files in the real binary format: unpacked batches, the
//! `.tar.gz` archive (MD5-checked), a download from a local server, and every broken file.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::http::{Reply, Server};
use ldm_run::data::cifar10::{self, ARCHIVE, FOLDER, RECORD, Source, TEST_FILE, TRAIN_FILES};
use ldm_run::data::files::md5_hex;
use ldm_run::data::{DataError, Split};

/// Records per synthetic batch file.
const N: usize = 3;

/// Record `k` of file `f`: label (f + k) % 10; red plane all 10 * f + k, green a ramp along
/// the row (the column index), blue a ramp down the columns (the row index).
fn record(f: usize, k: usize) -> Vec<u8> {
    let mut r = vec![((f + k) % 10) as u8];
    r.extend(std::iter::repeat_n((10 * f + k) as u8, 1024));
    r.extend((0..1024).map(|i| (i % 32) as u8));
    r.extend((0..1024).map(|i| (i / 32) as u8));
    r
}

/// File `f` (0-4: training batches, 5: the test batch).
fn batch(f: usize) -> Vec<u8> {
    (0..N).flat_map(|k| record(f, k)).collect()
}

fn names() -> Vec<&'static str> {
    TRAIN_FILES.iter().copied().chain([TEST_FILE]).collect()
}

fn unpack_into(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (f, name) in names().iter().enumerate() {
        std::fs::write(dir.join(name), batch(f)).unwrap();
    }
}

fn archive_bytes() -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    let mut append = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, data).unwrap();
    };
    append(
        &format!("{FOLDER}/batches.meta.txt"),
        b"airplane\nautomobile\n",
    );
    for (f, name) in names().iter().enumerate() {
        append(&format!("{FOLDER}/{name}"), &batch(f));
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn source(dirs: Vec<PathBuf>, md5: &str) -> Source {
    Source {
        dirs,
        archive_md5: md5.into(),
        records_per_file: N,
        mirrors: Vec::new(),
        download: false,
    }
}

fn unit(v: u8) -> f32 {
    f32::from(v) / 255.0 * 2.0 - 1.0
}

fn check_train(d: &ldm_run::data::Dataset) {
    assert_eq!((d.len(), d.channels, d.size), (5 * N, 3, 32));
    let labels: Vec<u32> = (0..5)
        .flat_map(|f| (0..N).map(move |k| ((f + k) % 10) as u32))
        .collect();
    assert_eq!(d.labels, labels);
    assert_eq!(d.class_names[..3], ["airplane", "automobile", "bird"]);
    assert_eq!(d.class_names[9], "truck");
    // Image 4 is file 1's record 1: red 11, green = column, blue = row.
    let img = d.image(4);
    assert!(img[..1024].iter().all(|&v| v == unit(11)));
    assert_eq!((img[1024 + 5], img[1024 + 32 * 7 + 5]), (unit(5), unit(5)));
    assert_eq!((img[2048 + 5], img[2048 + 32 * 7 + 5]), (unit(0), unit(7)));
}

#[test]
fn unpacked_files_in_either_place() {
    let dir = tempfile::tempdir().unwrap();
    unpack_into(&dir.path().join(FOLDER));
    let s = source(vec![dir.path().to_path_buf()], "unused");
    check_train(&cifar10::load(&s, Split::Train, (3, 32), None).unwrap());
    let t = cifar10::load(&s, Split::Test, (3, 32), None).unwrap();
    assert_eq!(t.labels, [5, 6, 7]);
    cifar10::preflight(&s).unwrap();

    // Straight in the data folder, found in the second folder looked in.
    let flat = tempfile::tempdir().unwrap();
    unpack_into(flat.path());
    let s = source(
        vec![dir.path().join("empty"), flat.path().to_path_buf()],
        "unused",
    );
    check_train(&cifar10::load(&s, Split::Train, (3, 32), None).unwrap());

    // Grey, smaller, limited.
    let g = cifar10::load(&s, Split::Train, (1, 16), Some(4)).unwrap();
    assert_eq!((g.len(), g.channels, g.image_len()), (4, 1, 256));
    assert_eq!(g.labels, [0, 1, 2, 1]);
}

#[test]
fn the_archive_checked_and_read_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = archive_bytes();
    std::fs::write(dir.path().join(ARCHIVE), &bytes).unwrap();
    let s = source(vec![dir.path().to_path_buf()], &md5_hex(&bytes));
    check_train(&cifar10::load(&s, Split::Train, (3, 32), None).unwrap());
    cifar10::preflight(&s).unwrap();
    // Nothing was unpacked to disk.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    // The archive wins over unpacked files beside it, so its checksum is always checked.
    unpack_into(&dir.path().join(FOLDER));
    let wrong = source(
        vec![dir.path().to_path_buf()],
        "c32a1d4ab5d03f1284b67883e8d87530",
    );
    let err = cifar10::load(&wrong, Split::Test, (3, 32), None).unwrap_err();
    assert!(
        matches!(&err, DataError::ArchiveChecksum { path, .. } if *path == dir.path().join(ARCHIVE)),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("expected c32a1d4ab5d03f1284b67883e8d87530"),
        "{err}"
    );
}

#[test]
fn broken_batches_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join(FOLDER);
    unpack_into(&folder);
    let s = source(vec![dir.path().to_path_buf()], "unused");
    // One record short.
    let short = folder.join("data_batch_3.bin");
    std::fs::write(&short, &batch(2)[..2 * RECORD]).unwrap();
    let err = cifar10::load(&s, Split::Train, (3, 32), None).unwrap_err();
    assert!(
        matches!(&err, DataError::BadRecords { path, .. } if *path == short),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("is 6146 bytes, and a batch is 3 records of 3073 bytes"),
        "{err}"
    );
    // A label past 9.
    let mut bad = batch(2);
    bad[RECORD] = 10;
    std::fs::write(&short, &bad).unwrap();
    let err = cifar10::load(&s, Split::Train, (3, 32), None).unwrap_err();
    assert!(err.to_string().contains("record 1 has label 10"), "{err}");
    // The test split alone still loads; preflight checks every file.
    assert_eq!(
        cifar10::load(&s, Split::Test, (3, 32), None).unwrap().len(),
        N
    );
    assert!(cifar10::preflight(&s).is_err());

    // Nothing anywhere, downloads off.
    std::fs::remove_dir_all(&folder).unwrap();
    let err = cifar10::load(&s, Split::Test, (3, 32), None)
        .unwrap_err()
        .to_string();
    for needle in [
        "cifar10: cifar-10-binary.tar.gz (or the files it holds) not found; looked in:",
        &format!("  {}\n", dir.path().display()),
        "downloading is off",
        "set dataset.download = true",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
    // A corrupt archive.
    std::fs::write(dir.path().join(ARCHIVE), b"\x1f\x8b not really").unwrap();
    let s = source(
        vec![dir.path().to_path_buf()],
        &md5_hex(b"\x1f\x8b not really"),
    );
    let err = cifar10::load(&s, Split::Test, (3, 32), None).unwrap_err();
    assert!(matches!(err, DataError::BadArchive { .. }), "{err}");
}

#[test]
fn downloads_the_archive_checked() {
    let bytes = archive_bytes();
    let md5 = md5_hex(&bytes);
    let mut corrupt = bytes.clone();
    corrupt[100] ^= 1;
    let routes = HashMap::from([
        (format!("/bad/{ARCHIVE}"), Reply::Body(corrupt)),
        (format!("/good/{ARCHIVE}"), Reply::Body(bytes.clone())),
    ]);
    let server = Server::start(routes);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("cifar10");
    let s = Source {
        mirrors: vec![server.url("none"), server.url("bad"), server.url("good")],
        download: true,
        ..source(vec![dest.clone()], &md5)
    };
    check_train(&cifar10::load(&s, Split::Train, (3, 32), None).unwrap());
    assert_eq!(
        server.requests(),
        [
            format!("/none/{ARCHIVE}"),
            format!("/bad/{ARCHIVE}"),
            format!("/good/{ARCHIVE}")
        ]
    );
    // Kept, verified, with no .part left; a second load downloads nothing.
    assert_eq!(std::fs::read(dest.join(ARCHIVE)).unwrap(), bytes);
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 1);
    cifar10::load(&s, Split::Test, (3, 32), None).unwrap();
    assert_eq!(server.requests().len(), 3);

    // Every mirror failing: each attempt reported, nothing left behind.
    let other = tempfile::tempdir().unwrap();
    let s = Source {
        mirrors: vec![server.url("none"), server.url("bad")],
        download: true,
        ..source(vec![other.path().join("cifar10")], &md5)
    };
    let err = cifar10::load(&s, Split::Test, (3, 32), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/none/cifar-10-binary.tar.gz: HTTP 404"),
        "{err}"
    );
    assert!(
        err.contains("/bad/cifar-10-binary.tar.gz: wrong checksum: MD5 is"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(other.path().join("cifar10"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn the_real_source_looks_where_mnist_is_looked_for() {
    use ldm_run::data::{DatasetConfig, DatasetName};
    let cfg = DatasetConfig {
        name: DatasetName::Cifar10,
        ..DatasetConfig::default()
    };
    let s = Source::new(&cfg, Some("/srv/data"));
    assert_eq!(s.dirs, [PathBuf::from("/srv/data/cifar10")]);
    assert_eq!(s.archive_md5, "c32a1d4ab5d03f1284b67883e8d87530");
    assert_eq!(s.mirrors, ["https://www.cs.toronto.edu/~kriz/"]);
    assert_eq!(s.records_per_file, 10_000);
    assert_eq!(
        Source::new(&cfg, None).dirs,
        [PathBuf::from("data/cifar10")]
    );
    let rooted = DatasetConfig {
        root: Some("/my/cifar".into()),
        mirrors: vec!["http://m/".into()],
        ..cfg
    };
    let s = Source::new(&rooted, Some("/srv/data"));
    assert_eq!(
        (s.dirs, s.mirrors),
        (
            vec![PathBuf::from("/my/cifar")],
            vec!["http://m/".to_string()]
        )
    );
}
