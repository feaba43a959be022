//! Fashion-MNIST from Debian's package folder (`apt install dataset-fashion-mnist`).

use std::path::Path;

use ldm_run::data::files::{self, DEBIAN_FASHION_DIR, FASHION_MNIST};
use ldm_run::data::{DatasetConfig, DatasetName};
use ldm_run::data::{Split, load};

#[test]
fn debian_files_pass_their_checksums() {
    for f in FASHION_MNIST.all() {
        let path = files::locate_in(Path::new(DEBIAN_FASHION_DIR), f.name).unwrap_or_else(|| {
            panic!(
                "{} missing in {DEBIAN_FASHION_DIR}: apt install dataset-fashion-mnist",
                f.name
            )
        });
        files::read_verified(&path, &f).unwrap();
    }
}

#[test]
fn loads_from_the_debian_folder_when_the_data_folder_lacks_them() {
    // LDM_DATA_DIR points at an empty folder: the files come from the Debian package folder.
    let empty = tempfile::tempdir().unwrap();
    let cfg = DatasetConfig {
        name: DatasetName::FashionMnist,
        download: false,
        ..DatasetConfig::default()
    };
    let env = empty.path().to_str();
    let train = load(&cfg, Split::Train, env).unwrap();
    assert_eq!(train.len(), 60000);
    assert_eq!((train.channels, train.size), (1, 32));
    assert_eq!(train.images.len(), 60000 * 32 * 32);
    assert_eq!(train.labels[..5], [9, 0, 0, 3, 0]);
    let mut counts = [0usize; 10];
    for &l in &train.labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [6000; 10]);
    assert_eq!(train.class_names[0], "t-shirt");
    assert_eq!(train.class_names[9], "ankle-boot");
    assert!(train.images.iter().all(|v| (-1.0..=1.0).contains(v)));

    let test = load(&cfg, Split::Test, env).unwrap();
    assert_eq!(test.len(), 10000);
    // Nothing was written to the data folder.
    assert!(!empty.path().join("fashion_mnist").exists());
}
