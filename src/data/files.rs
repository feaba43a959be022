//! The known IDX files of each data set, where they are looked for, and their checksums.
//!
//! Checksums are MD5s of the DECOMPRESSED content: the gzip bytes differ between mirrors and
//! copies (compression level, timestamps), the IDX bytes do not. Every load verifies them again;
//! nothing is cached that could hide a file corrupted since.

use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use super::dataset::Split;
use super::error::DataError;
use super::idx;
use super::settings::{DatasetConfig, DatasetName};

/// One IDX file: its name without `.gz`, and the MD5 of its decompressed content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownFile {
    pub name: &'static str,
    pub md5: &'static str,
}

/// The four files of an IDX data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSet {
    pub train_images: KnownFile,
    pub train_labels: KnownFile,
    pub test_images: KnownFile,
    pub test_labels: KnownFile,
}

impl FileSet {
    /// Images and labels files of one split.
    pub fn split(&self, split: Split) -> (KnownFile, KnownFile) {
        match split {
            Split::Train => (self.train_images, self.train_labels),
            Split::Test => (self.test_images, self.test_labels),
        }
    }

    pub fn all(&self) -> [KnownFile; 4] {
        [
            self.train_images,
            self.train_labels,
            self.test_images,
            self.test_labels,
        ]
    }
}

pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

const fn set(md5s: [&'static str; 4]) -> FileSet {
    FileSet {
        train_images: KnownFile {
            name: TRAIN_IMAGES,
            md5: md5s[0],
        },
        train_labels: KnownFile {
            name: TRAIN_LABELS,
            md5: md5s[1],
        },
        test_images: KnownFile {
            name: TEST_IMAGES,
            md5: md5s[2],
        },
        test_labels: KnownFile {
            name: TEST_LABELS,
            md5: md5s[3],
        },
    }
}

pub const MNIST: FileSet = set([
    "6bbc9ace898e44ae57da46a324031adb",
    "a25bea736e30d166cdddb491f175f624",
    "2646ac647ad5339dbf082846283269ea",
    "27ae3e4e09519cfbb04c329615203637",
]);

pub const FASHION_MNIST: FileSet = set([
    "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "9018921c3c673c538a1fc5bad174d6f9",
    "8181f5470baa50b63fa0f6fddb340f0a",
    "15d484375f8d13e6eb1aabb0c3f46965",
]);

/// Where Debian's `dataset-fashion-mnist` package puts the Fashion-MNIST files.
pub const DEBIAN_FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";
pub const DEBIAN_FASHION_PACKAGE: &str = "dataset-fashion-mnist";

/// The environment variable naming the folder that holds one sub-folder per data set.
pub const DATA_DIR_ENV: &str = "LDM_DATA_DIR";

/// The files of an IDX data set; `None` for the others.
pub fn known_files(name: DatasetName) -> Option<FileSet> {
    match name {
        DatasetName::Mnist => Some(MNIST),
        DatasetName::FashionMnist => Some(FASHION_MNIST),
        DatasetName::Cifar10 | DatasetName::ImageFolder => None,
    }
}

/// The public mirrors tried when `dataset.mirrors` is empty, in order.
pub fn default_mirrors(name: DatasetName) -> &'static [&'static str] {
    match name {
        DatasetName::Mnist => &[
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ],
        DatasetName::FashionMnist => {
            &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
        }
        DatasetName::Cifar10 => &["https://www.cs.toronto.edu/~kriz/"],
        DatasetName::ImageFolder => &[],
    }
}

/// The mirrors to try: `dataset.mirrors` if it lists any, else the defaults.
pub fn mirrors(cfg: &DatasetConfig) -> Vec<String> {
    if cfg.mirrors.is_empty() {
        default_mirrors(cfg.name)
            .iter()
            .map(|m| m.to_string())
            .collect()
    } else {
        cfg.mirrors.clone()
    }
}

/// The folder a data set's files belong in (and downloads go to): `dataset.root` if set, else
/// `$LDM_DATA_DIR/<name>` (`env_data_dir` is that variable's value, passed in so tests need not
/// touch the process environment), else `data/<name>` under the working folder.
pub fn data_dir(cfg: &DatasetConfig, env_data_dir: Option<&str>) -> PathBuf {
    if let Some(root) = &cfg.root {
        return root.clone();
    }
    match env_data_dir {
        Some(env) if !env.trim().is_empty() => Path::new(env).join(cfg.name.as_str()),
        _ => Path::new("data").join(cfg.name.as_str()),
    }
}

/// Every folder looked in, in order: [`data_dir`] first, then, for Fashion-MNIST, Debian's
/// package folder.
pub fn search_dirs(cfg: &DatasetConfig, env_data_dir: Option<&str>) -> Vec<PathBuf> {
    let mut dirs = vec![data_dir(cfg, env_data_dir)];
    if cfg.name == DatasetName::FashionMnist {
        let debian = PathBuf::from(DEBIAN_FASHION_DIR);
        if !dirs.contains(&debian) {
            dirs.push(debian);
        }
    }
    dirs
}

/// The first existing copy of `name` (raw, then `.gz`) in the first folder of `dirs` that has one.
pub fn locate(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter().find_map(|dir| locate_in(dir, name))
}

/// `dir/name` if it is a file, else `dir/name.gz` if that is one.
pub fn locate_in(dir: &Path, name: &str) -> Option<PathBuf> {
    [dir.join(name), dir.join(format!("{name}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
}

/// Lowercase hex MD5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Lowercase hex MD5 of the file at `path`, read in pieces.
pub fn md5_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks decompressed content against a known file's MD5. `path` names it in the error.
pub fn verify(content: &[u8], file: &KnownFile, path: &Path) -> Result<(), DataError> {
    let actual = md5_hex(content);
    if actual == file.md5 {
        return Ok(());
    }
    let fix = if path.starts_with(DEBIAN_FASHION_DIR) {
        format!(
            "Reinstall the package that provides it (apt install --reinstall {DEBIAN_FASHION_PACKAGE}), \
             or put a good copy of {} in the data folder.",
            file.name
        )
    } else {
        format!(
            "Delete it so it is downloaded again (with dataset.download = true), or replace it with \
             a good copy of {} (raw or .gz).",
            file.name
        )
    };
    Err(DataError::Checksum {
        path: path.to_path_buf(),
        expected: file.md5.to_string(),
        actual,
        fix,
    })
}

/// Reads a file (raw or gzip), and returns its decompressed content once its MD5 checks out.
pub fn read_verified(path: &Path, file: &KnownFile) -> Result<Vec<u8>, DataError> {
    let content = idx::read_decompressed(path)?;
    verify(&content, file, path)?;
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(name: DatasetName) -> DatasetConfig {
        DatasetConfig {
            name,
            ..DatasetConfig::default()
        }
    }

    #[test]
    fn md5_of_known_strings() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn data_dir_precedence() {
        let mut c = cfg(DatasetName::Mnist);
        assert_eq!(data_dir(&c, None), PathBuf::from("data/mnist"));
        assert_eq!(data_dir(&c, Some("")), PathBuf::from("data/mnist"));
        assert_eq!(data_dir(&c, Some("/srv/d")), PathBuf::from("/srv/d/mnist"));
        c.root = Some("/my/mnist".into());
        assert_eq!(data_dir(&c, Some("/srv/d")), PathBuf::from("/my/mnist"));
        let f = cfg(DatasetName::FashionMnist);
        assert_eq!(
            search_dirs(&f, Some("/srv/d")),
            vec![
                PathBuf::from("/srv/d/fashion_mnist"),
                PathBuf::from(DEBIAN_FASHION_DIR)
            ]
        );
        assert_eq!(search_dirs(&c, None), vec![PathBuf::from("/my/mnist")]);
    }

    #[test]
    fn mirrors_default_and_override() {
        let mut c = cfg(DatasetName::Mnist);
        assert_eq!(mirrors(&c).len(), 2);
        assert!(mirrors(&c)[0].starts_with("https://ossci-datasets"));
        c.mirrors = vec!["http://x/".into()];
        assert_eq!(mirrors(&c), vec!["http://x/".to_string()]);
        assert_eq!(
            mirrors(&cfg(DatasetName::FashionMnist)),
            vec!["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/".to_string()]
        );
    }

    #[test]
    fn locate_prefers_raw_then_gz_then_later_folders() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(locate(&dirs, TRAIN_LABELS), None);
        std::fs::write(b.path().join(TRAIN_LABELS), b"x").unwrap();
        assert_eq!(
            locate(&dirs, TRAIN_LABELS),
            Some(b.path().join(TRAIN_LABELS))
        );
        let gz = a.path().join(format!("{TRAIN_LABELS}.gz"));
        std::fs::write(&gz, b"x").unwrap();
        assert_eq!(locate(&dirs, TRAIN_LABELS), Some(gz));
        std::fs::write(a.path().join(TRAIN_LABELS), b"x").unwrap();
        assert_eq!(
            locate(&dirs, TRAIN_LABELS),
            Some(a.path().join(TRAIN_LABELS))
        );
    }

    #[test]
    fn checksum_error_names_file_both_md5s_and_fix() {
        let f = MNIST.test_labels;
        let err = verify(b"abc", &f, Path::new("/d/t10k-labels-idx1-ubyte")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/d/t10k-labels-idx1-ubyte"), "{msg}");
        assert!(msg.contains("900150983cd24fb0d6963f7d28e17f72"), "{msg}");
        assert!(msg.contains(f.md5), "{msg}");
        assert!(msg.contains("Delete it"), "{msg}");
        let err = verify(b"abc", &f, &Path::new(DEBIAN_FASHION_DIR).join("x.gz")).unwrap_err();
        assert!(
            err.to_string()
                .contains("--reinstall dataset-fashion-mnist")
        );
    }
}
