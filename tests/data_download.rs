//! Downloads for real, from a small HTTP/1.1 server on 127.0.0.1 serving the shared MNIST
//! test files. Never touches the internet.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;

use common::http::{Reply, Server};

use ldm_run::data::files::{self, MNIST};
use ldm_run::data::{DataError, Split, load};
use ldm_run::data::{DatasetConfig, DatasetName};

fn gz_of(name: &str) -> Vec<u8> {
    common::mnist_gz(name)
}

/// `prefix`'s two MNIST test files with `make` applied to their .gz bytes.
fn routes(prefix: &str, make: impl Fn(&str, Vec<u8>) -> Reply) -> HashMap<String, Reply> {
    [files::TEST_IMAGES, files::TEST_LABELS]
        .into_iter()
        .map(|name| (format!("/{prefix}/{name}.gz"), make(name, gz_of(name))))
        .collect()
}

fn cfg(root: &Path, mirrors: Vec<String>) -> DatasetConfig {
    DatasetConfig {
        name: DatasetName::Mnist,
        root: Some(root.to_path_buf()),
        mirrors,
        download: true,
        ..DatasetConfig::default()
    }
}

/// File names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

const GZ_FILES: [&str; 2] = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"];

#[test]
fn downloads_verifies_and_loads() {
    let server = Server::start(routes("good", |_, b| Reply::Body(b)));
    let tmp = tempfile::tempdir().unwrap();
    // A folder that does not exist yet: the download creates it.
    let root = tmp.path().join("nested/mnist");
    let c = cfg(&root, vec![server.url("good")]);
    let test = load(&c, Split::Test, None).unwrap();
    assert_eq!(test.len(), 10000);
    assert_eq!(test.labels[..3], [7, 2, 1]);
    assert_eq!(listing(&root), GZ_FILES);
    for (name, f) in [
        (GZ_FILES[0], MNIST.test_images),
        (GZ_FILES[1], MNIST.test_labels),
    ] {
        files::read_verified(&root.join(name), &f).unwrap();
        assert_eq!(
            std::fs::read(root.join(name)).unwrap(),
            gz_of(f.name),
            "{name} saved as served"
        );
    }
    assert_eq!(
        server.requests(),
        [
            "/good/t10k-images-idx3-ubyte.gz",
            "/good/t10k-labels-idx1-ubyte.gz"
        ]
    );
    // Present now: loading again downloads nothing.
    assert_eq!(load(&c, Split::Test, None).unwrap(), test);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn wrong_checksum_falls_back_to_the_next_mirror() {
    // "bad" serves valid gzip of the wrong content: each file is the other one.
    let mut all = routes("bad", |name, _| {
        let other = if name == files::TEST_IMAGES {
            files::TEST_LABELS
        } else {
            files::TEST_IMAGES
        };
        Reply::Body(gz_of(other))
    });
    all.extend(routes("good", |_, b| Reply::Body(b)));
    let server = Server::start(all);
    let tmp = tempfile::tempdir().unwrap();

    // Only the bad mirror: one error, with each attempt's checksum mismatch.
    let err = load(&cfg(tmp.path(), vec![server.url("bad")]), Split::Test, None).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, DataError::Missing { attempts, .. } if attempts.len() == 2),
        "{msg}"
    );
    assert!(msg.contains("wrong checksum"), "{msg}");
    assert!(msg.contains(MNIST.test_images.md5), "{msg}");
    assert!(msg.contains(MNIST.test_labels.md5), "{msg}");
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));

    // Bad then good: falls back, loads.
    let c = cfg(tmp.path(), vec![server.url("bad"), server.url("good")]);
    let test = load(&c, Split::Test, None).unwrap();
    assert_eq!(test.len(), 10000);
    assert_eq!(listing(tmp.path()), GZ_FILES);
    assert_eq!(
        server.requests()[2..],
        [
            "/bad/t10k-images-idx3-ubyte.gz",
            "/good/t10k-images-idx3-ubyte.gz",
            "/bad/t10k-labels-idx1-ubyte.gz",
            "/good/t10k-labels-idx1-ubyte.gz",
        ]
    );
}

#[test]
fn dropped_connection_leaves_no_partial_file() {
    let mut all = routes("drop", |_, b| {
        let half = b.len() / 2;
        Reply::DropAfter(b, half)
    });
    all.extend(routes("good", |_, b| Reply::Body(b)));
    let server = Server::start(all);
    let tmp = tempfile::tempdir().unwrap();

    let err = load(
        &cfg(tmp.path(), vec![server.url("drop")]),
        Split::Test,
        None,
    )
    .unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    let images_gz = gz_of(files::TEST_IMAGES).len();
    assert!(
        msg.contains(&format!("after {} of {images_gz} bytes", images_gz / 2)),
        "{msg}"
    );
    assert!(
        msg.contains("t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"),
        "{msg}"
    );
    // Nothing under the final names, no .part left.
    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));

    // A dropped connection is one failed attempt: the next mirror is tried.
    let c = cfg(tmp.path(), vec![server.url("drop"), server.url("good")]);
    assert_eq!(load(&c, Split::Test, None).unwrap().len(), 10000);
    assert_eq!(listing(tmp.path()), GZ_FILES);
}

#[test]
fn content_encoding_gzip_is_saved_decompressed() {
    // A server that labels the .gz as Content-Encoding: gzip: the client decompresses it, so
    // the file is kept raw, under its raw name.
    let server = Server::start(routes("enc", |_, b| Reply::Encoded(b)));
    let tmp = tempfile::tempdir().unwrap();
    let test = load(&cfg(tmp.path(), vec![server.url("enc")]), Split::Test, None).unwrap();
    assert_eq!(test.len(), 10000);
    assert_eq!(
        listing(tmp.path()),
        ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    );
    assert_eq!(
        std::fs::metadata(tmp.path().join("t10k-images-idx3-ubyte"))
            .unwrap()
            .len(),
        16 + 10000 * 784
    );
}

#[test]
fn no_reachable_mirror_says_what_is_missing_where_and_how_to_fix() {
    // A port nothing listens on, and a live server that 404s.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/mnist/", closed.local_addr().unwrap());
    drop(closed);
    let server = Server::start(HashMap::new());
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("mnist");
    let c = cfg(&root, vec![dead.clone(), server.url("none")]);
    let err = load(&c, Split::Train, None).unwrap_err();
    let msg = err.to_string();
    eprintln!("{msg}");
    let DataError::Missing {
        missing,
        searched,
        attempts,
        ..
    } = &err
    else {
        panic!("{msg}");
    };
    assert_eq!(
        missing,
        &["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]
    );
    assert_eq!(*searched, vec![root.clone()]);
    assert_eq!(attempts.len(), 4);
    assert_eq!(attempts[0].url, format!("{dead}train-images-idx3-ubyte.gz"));
    assert_eq!(attempts[1].outcome, "HTTP 404");
    for needle in [
        "train-images-idx3-ubyte, train-labels-idx1-ubyte",
        &root.display().to_string(),
        &format!("{dead}train-labels-idx1-ubyte.gz"),
        "HTTP 404",
        "copy the files (raw or .gz) into",
        "dataset.root",
        "LDM_DATA_DIR",
    ] {
        assert!(msg.contains(needle), "{needle:?} not in:\n{msg}");
    }
    assert!(!msg.contains("apt install"), "{msg}");
    assert!(listing(&root).is_empty());

    // Download off: the same error, without attempts and without touching the network.
    let before = server.requests().len();
    let c = DatasetConfig {
        download: false,
        ..c
    };
    let err = load(&c, Split::Train, None).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(&err, DataError::Missing { attempts, .. } if attempts.is_empty()));
    assert!(msg.contains("dataset.download = false"), "{msg}");
    assert!(msg.contains(&root.display().to_string()), "{msg}");
    assert!(!msg.contains("HTTP 404"), "{msg}");
    assert_eq!(server.requests().len(), before);
}
