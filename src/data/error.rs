//! Everything that can go wrong while finding, downloading, checking and decoding data.
//!
//! Every message names the file or folder involved and, where there is one, the fix.

use std::fmt::Write as _;
use std::path::PathBuf;

/// One try at downloading one file from one mirror, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub url: String,
    /// What went wrong (`HTTP 404`, `connection refused`, a checksum mismatch...).
    pub outcome: String,
}

/// Errors of the data module.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The experiment's `[dataset]` table asks for something this module cannot do.
    #[error("dataset.{key}: {message}")]
    Config { key: &'static str, message: String },

    #[error("could not {action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{} looks gzip-compressed but cannot be decompressed ({source}); delete it so it is \
         downloaded again, or replace it with a good copy",
        .path.display()
    )]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{} is not an IDX {what} file: its magic number is 0x{found:08x}, expected 0x{expected:08x}",
        .path.display()
    )]
    BadMagic {
        path: PathBuf,
        what: &'static str,
        expected: u32,
        found: u32,
    },

    /// The header promises a different amount of data than the file holds.
    #[error(
        "{} is {}: its header promises {expected} bytes of data after the header, the file has {actual}; \
         delete it so it is downloaded again, or replace it with a good copy",
        .path.display(),
        if .actual < .expected { "truncated" } else { "too long" }
    )]
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },

    #[error(
        "{} holds {images} images but {} holds {labels} labels; the two files must come from the same set",
        .images_path.display(),
        .labels_path.display()
    )]
    CountMismatch {
        images_path: PathBuf,
        labels_path: PathBuf,
        images: usize,
        labels: usize,
    },

    /// The decompressed content of a known file does not have the published MD5.
    #[error(
        "{} is corrupt: MD5 of its decompressed content is {actual}, expected {expected}. \
         {fix}",
        .path.display()
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
        fix: String,
    },

    /// Files of an IDX data set could be neither found nor downloaded.
    #[error("{}", missing_message(.dataset, .missing, .searched, .attempts, .download, .debian_package))]
    Missing {
        dataset: &'static str,
        /// File names (without `.gz`) that are missing.
        missing: Vec<String>,
        /// Every folder looked in, in order; the first is where downloads go.
        searched: Vec<PathBuf>,
        /// Every download attempt, in order (empty when downloading is off).
        attempts: Vec<Attempt>,
        download: bool,
        /// A Debian package that provides the files, if there is one.
        debian_package: Option<&'static str>,
    },

    #[error(
        "dataset.root is required for image_folder: set it to a folder holding \
         train/<class>/*.png and test/<class>/*.png"
    )]
    NoRoot,

    #[error("{} does not exist or is not a folder; {hint}", .path.display())]
    MissingFolder { path: PathBuf, hint: String },

    #[error(
        "{} has no class folders; put each class's PNG files in a sub-folder named after the class",
        .path.display()
    )]
    NoClasses { path: PathBuf },

    #[error(
        "class folder {} holds no PNG files; add some or remove the folder",
        .path.display()
    )]
    EmptyClass { path: PathBuf },

    #[error(
        "class folder {} is not among the training classes ({}); test classes must also exist under train/",
        .path.display(),
        .train_classes.join(", ")
    )]
    UnknownClass {
        path: PathBuf,
        train_classes: Vec<String>,
    },

    #[error(
        "{} is not a readable PNG file ({reason}); only PNG files are read: convert it or move it out of the data folder",
        .path.display()
    )]
    NotPng { path: PathBuf, reason: String },

    /// A row of a captioned folder's metadata is malformed.
    #[error("{}, line {line}: {message}", .path.display())]
    MetadataRow {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("{} holds both metadata.jsonl and metadata.csv; keep one of them", .dir.display())]
    TwoMetadataFiles { dir: PathBuf },

    #[error("{} has no rows; give each image a row with file_name and its caption", .path.display())]
    EmptyMetadata { path: PathBuf },

    #[error(
        "{} has no metadata.jsonl or metadata.csv, but {} has: a captioned folder needs one in \
         each split folder",
        .dir.display(),
        .train.display()
    )]
    MissingMetadata { dir: PathBuf, train: PathBuf },

    #[error(
        "{}, line {line}: {} does not exist (file_name {file_name:?} is relative to the \
         metadata's folder)",
        .metadata.display(),
        .path.display()
    )]
    MissingImage {
        metadata: PathBuf,
        line: usize,
        file_name: String,
        path: PathBuf,
    },

    #[error(
        "{}, line {line}: {} is not a readable PNG or JPEG image ({reason})",
        .metadata.display(),
        .path.display()
    )]
    UnreadableImage {
        metadata: PathBuf,
        line: usize,
        path: PathBuf,
        reason: String,
    },

    /// A row's class is not one of the training split's.
    #[error(
        "{}, line {line}: {what} is not among the training classes ({})",
        .metadata.display(),
        .classes.join(", ")
    )]
    UnknownLabel {
        metadata: PathBuf,
        line: usize,
        /// What names the class: the label column's value or the file's folder.
        what: String,
        classes: Vec<String>,
    },

    /// A data set distributed as one archive: neither the archive nor its files were found.
    #[error("{}", missing_archive_message(.dataset, .archive, .searched, .attempts, .download))]
    MissingArchive {
        dataset: &'static str,
        /// The archive's file name.
        archive: String,
        /// Every folder looked in, in order; the first is where downloads go.
        searched: Vec<PathBuf>,
        attempts: Vec<Attempt>,
        download: bool,
    },

    #[error(
        "{} is corrupt: its MD5 is {actual}, expected {expected}. Delete it so it is downloaded \
         again (with dataset.download = true), or replace it with a good copy",
        .path.display()
    )]
    ArchiveChecksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error("{} cannot be read as a .tar.gz archive ({reason})", .path.display())]
    BadArchive { path: PathBuf, reason: String },

    /// A file of a binary data set does not have the expected layout.
    #[error("{} is not a {what} file: {reason}", .path.display())]
    BadRecords {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
}

impl DataError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

fn missing_message(
    dataset: &str,
    missing: &[String],
    searched: &[PathBuf],
    attempts: &[Attempt],
    download: &bool,
    debian_package: &Option<&'static str>,
) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "{dataset}: {} missing: {}",
        if missing.len() == 1 { "file" } else { "files" },
        missing.join(", ")
    );
    let _ = writeln!(m, "looked for each (raw or .gz) in:");
    how_to_provide(
        &mut m,
        Provide {
            searched,
            attempts,
            download: *download,
            what: "the files (raw or .gz)",
            them: "them",
            debian_package: *debian_package,
        },
    );
    m
}

fn missing_archive_message(
    dataset: &str,
    archive: &str,
    searched: &[PathBuf],
    attempts: &[Attempt],
    download: &bool,
) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "{dataset}: {archive} (or the files it holds) not found; looked in:"
    );
    how_to_provide(
        &mut m,
        Provide {
            searched,
            attempts,
            download: *download,
            what: &format!("{archive}, or the folder it unpacks to,"),
            them: "it",
            debian_package: None,
        },
    );
    m
}

/// The part of a "not found" message after its first line.
struct Provide<'a> {
    searched: &'a [PathBuf],
    attempts: &'a [Attempt],
    download: bool,
    /// What to copy into the data folder.
    what: &'a str,
    /// "them" or "it".
    them: &'a str,
    debian_package: Option<&'a str>,
}

/// The folders looked in, the download attempts, and every way to provide the files.
fn how_to_provide(m: &mut String, p: Provide<'_>) {
    for dir in p.searched {
        let _ = writeln!(m, "  {}", dir.display());
    }
    if p.download {
        if p.attempts.is_empty() {
            let _ = writeln!(m, "no download was tried (no mirrors)");
        } else {
            let _ = writeln!(m, "download attempts:");
            for a in p.attempts {
                let _ = writeln!(m, "  {}: {}", a.url, a.outcome);
            }
        }
    } else {
        let _ = writeln!(m, "downloading is off (dataset.download = false)");
    }
    let them = p.them;
    let _ = writeln!(m, "to provide {them}, do one of:");
    if let Some(first) = p.searched.first() {
        let _ = writeln!(m, "  - copy {} into {}", p.what, first.display());
    }
    let _ = writeln!(
        m,
        "  - set dataset.root, or the LDM_DATA_DIR environment variable, to a folder holding {them}"
    );
    if let Some(pkg) = p.debian_package {
        let _ = writeln!(m, "  - on Debian or Ubuntu: apt install {pkg}");
    }
    if p.download {
        let _ = write!(
            m,
            "  - check the network, or list reachable mirrors in dataset.mirrors"
        );
    } else {
        let _ = write!(
            m,
            "  - set dataset.download = true to fetch {them} from the mirrors"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_message_for_fashion_mentions_the_debian_package() {
        let err = DataError::Missing {
            dataset: "fashion_mnist",
            missing: vec!["t10k-images-idx3-ubyte".into()],
            searched: vec![
                "data/fashion_mnist".into(),
                "/usr/share/datasets/fashion-mnist".into(),
            ],
            attempts: vec![Attempt {
                url: "http://m/t10k-images-idx3-ubyte.gz".into(),
                outcome: "HTTP 503".into(),
            }],
            download: true,
            debian_package: Some("dataset-fashion-mnist"),
        };
        let msg = err.to_string();
        for needle in [
            "fashion_mnist: file missing: t10k-images-idx3-ubyte",
            "  data/fashion_mnist\n  /usr/share/datasets/fashion-mnist\n",
            "http://m/t10k-images-idx3-ubyte.gz: HTTP 503",
            "copy the files (raw or .gz) into data/fashion_mnist",
            "LDM_DATA_DIR",
            "apt install dataset-fashion-mnist",
        ] {
            assert!(msg.contains(needle), "{needle:?} not in:\n{msg}");
        }
    }
}
