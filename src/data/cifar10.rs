//! CIFAR-10 (Krizhevsky, 2009), binary version: `cifar-10-binary.tar.gz`, whose
//! `cifar-10-batches-bin/` holds `data_batch_1.bin` ... `data_batch_5.bin` (training, 10,000
//! images each) and `test_batch.bin`. Each record is one label byte (0-9) and 3,072 bytes of
//! pixels: the red, green and blue 32x32 planes, rows top to bottom.
//!
//! Looked for like MNIST's files: in `dataset.root`, else `$LDM_DATA_DIR/cifar10`, else
//! `data/cifar10`. In that folder the archive itself is read when present, its MD5 checked
//! first (the published checksum is of the archive); else the unpacked files, in
//! `cifar-10-batches-bin/` or in the folder itself, each checked to be exactly 10,000 records
//! with labels 0-9 (no checksum of the single files is published). Missing both, the archive
//! is downloaded (when `dataset.download`) into the first folder, checked, and kept.
//!
//! Prompts are the class names. Images are 32x32 RGB; other sizes are resized by
//! [`super::fit`], grey is luma with PIL's weights.

use std::path::{Path, PathBuf};

use super::dataset::{Dataset, Split};
use super::download::download_verbatim;
use super::error::{Attempt, DataError};
use super::settings::{DatasetConfig, DatasetName};
use super::{archive, decode, files, fit};

pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
pub const ARCHIVE: &str = "cifar-10-binary.tar.gz";
pub const ARCHIVE_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// The folder the archive unpacks to.
pub const FOLDER: &str = "cifar-10-batches-bin";
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";
pub const SIDE: usize = 32;
/// Bytes per record: the label, then 3 planes of 32x32.
pub const RECORD: usize = 1 + 3 * SIDE * SIDE;
pub const RECORDS_PER_FILE: usize = 10_000;

/// Where the files are looked for, how they are checked, and whether and from where the
/// archive may be downloaded. [`Source::new`] gives the real data set's; tests make their own
/// with small synthetic files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Folders looked in, in order; the first is where a download goes.
    pub dirs: Vec<PathBuf>,
    pub archive_md5: String,
    pub records_per_file: usize,
    /// Base URLs of the archive, tried in order.
    pub mirrors: Vec<String>,
    pub download: bool,
}

impl Source {
    /// The real CIFAR-10 for `cfg` (its `root`, `download` and `mirrors`); `env_data_dir` is
    /// the value of `LDM_DATA_DIR`.
    pub fn new(cfg: &DatasetConfig, env_data_dir: Option<&str>) -> Self {
        Self {
            dirs: vec![files::data_dir(cfg, env_data_dir)],
            archive_md5: ARCHIVE_MD5.into(),
            records_per_file: RECORDS_PER_FILE,
            mirrors: files::mirrors(cfg),
            download: cfg.download,
        }
    }
}

/// The batch files of a split.
pub fn split_files(split: Split) -> Vec<&'static str> {
    match split {
        Split::Train => TRAIN_FILES.to_vec(),
        Split::Test => vec![TEST_FILE],
    }
}

/// Where the files were found.
enum Found {
    Archive(PathBuf),
    Files(Vec<PathBuf>),
}

/// The first folder holding the archive, or else all of `names` unpacked.
fn locate(source: &Source, names: &[&str]) -> Option<Found> {
    source.dirs.iter().find_map(|dir| {
        let archive = dir.join(ARCHIVE);
        if archive.is_file() {
            return Some(Found::Archive(archive));
        }
        [dir.join(FOLDER), dir.clone()].into_iter().find_map(|d| {
            let paths: Vec<PathBuf> = names.iter().map(|n| d.join(n)).collect();
            paths
                .iter()
                .all(|p| p.is_file())
                .then_some(Found::Files(paths))
        })
    })
}

/// [`locate`], downloading the archive when nothing is found and downloads are allowed.
fn find(source: &Source, names: &[&str]) -> Result<Found, DataError> {
    if let Some(found) = locate(source, names) {
        return Ok(found);
    }
    let mut attempts = Vec::new();
    if let (true, Some(dest)) = (source.download, source.dirs.first()) {
        if let Err(e) = std::fs::create_dir_all(dest) {
            attempts.push(Attempt {
                url: dest.display().to_string(),
                outcome: format!("could not create the data folder: {e}"),
            });
        } else {
            for mirror in &source.mirrors {
                let url = format!("{}/{ARCHIVE}", mirror.trim_end_matches('/'));
                match download_verbatim(&url, ARCHIVE, &source.archive_md5, dest) {
                    Ok(path) => return Ok(Found::Archive(path)),
                    Err(outcome) => {
                        eprintln!("data: {url}: {outcome}");
                        attempts.push(Attempt { url, outcome });
                    }
                }
            }
        }
    }
    Err(DataError::MissingArchive {
        dataset: DatasetName::Cifar10.as_str(),
        archive: ARCHIVE.into(),
        searched: source.dirs.clone(),
        attempts,
        download: source.download,
    })
}

/// The bytes of the batch files `names`, each with the path that names it in errors.
fn read(source: &Source, names: &[&str]) -> Result<Vec<(PathBuf, Vec<u8>)>, DataError> {
    match find(source, names)? {
        Found::Archive(path) => {
            archive::verify(&path, &source.archive_md5)?;
            let members: Vec<String> = names.iter().map(|n| format!("{FOLDER}/{n}")).collect();
            let contents = archive::read_members(&path, &members)?;
            Ok(members.iter().map(|m| path.join(m)).zip(contents).collect())
        }
        Found::Files(paths) => paths
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).map_err(|e| DataError::io("read", &p, e))?;
                Ok((p, bytes))
            })
            .collect(),
    }
}

/// The labels of a batch file's records, checked: exactly `records` records, labels 0-9.
pub fn check_batch(bytes: &[u8], records: usize, path: &Path) -> Result<Vec<u8>, DataError> {
    let bad = |reason: String| DataError::BadRecords {
        path: path.to_path_buf(),
        what: "CIFAR-10 batch",
        reason,
    };
    if bytes.len() != records * RECORD {
        return Err(bad(format!(
            "it is {} bytes, and a batch is {records} records of {RECORD} bytes ({} bytes); \
             delete it so it is downloaded again, or replace it with a good copy",
            bytes.len(),
            records * RECORD
        )));
    }
    let labels: Vec<u8> = bytes.chunks_exact(RECORD).map(|r| r[0]).collect();
    if let Some((i, l)) = labels
        .iter()
        .enumerate()
        .find(|(_, l)| usize::from(**l) >= CLASSES.len())
    {
        return Err(bad(format!("record {i} has label {l}; labels are 0 to 9")));
    }
    Ok(labels)
}

/// Loads one split, as `channels` (1 or 3) x `size` x `size`. `limit`: the first N images.
pub fn load(
    source: &Source,
    split: Split,
    (channels, size): (usize, usize),
    limit: Option<usize>,
) -> Result<Dataset, DataError> {
    if channels != 1 && channels != 3 {
        return Err(DataError::Config {
            key: "channels",
            message: format!("{channels} is not supported; expected 1 (grey) or 3 (RGB)"),
        });
    }
    let mut labels = Vec::new();
    let mut images = Vec::new();
    for (path, bytes) in read(source, &split_files(split))? {
        labels.extend(check_batch(&bytes, source.records_per_file, &path)?);
        for record in bytes.chunks_exact(RECORD) {
            if limit.is_some_and(|l| images.len() >= l * channels * size * size) {
                break;
            }
            let rgb = &record[1..];
            let plane = SIDE * SIDE;
            let pixels: Vec<u8> = if channels == 1 {
                (0..plane)
                    .map(|i| decode::luma(rgb[i], rgb[plane + i], rgb[2 * plane + i]))
                    .collect()
            } else {
                rgb.to_vec()
            };
            images.extend(fit::centre_crop(&pixels, channels, (SIDE, SIDE), size));
        }
    }
    labels.truncate(images.len() / (channels * size * size));
    Ok(Dataset {
        images,
        labels: labels.into_iter().map(u32::from).collect(),
        channels,
        size,
        class_names: CLASSES.iter().map(|c| c.to_string()).collect(),
        captions: None,
    })
}

/// Checks, before a run starts, that every batch file is there (downloading the archive if
/// allowed) and sound.
pub fn preflight(source: &Source) -> Result<(), DataError> {
    let names: Vec<&str> = TRAIN_FILES.iter().copied().chain([TEST_FILE]).collect();
    for (path, bytes) in read(source, &names)? {
        check_batch(&bytes, source.records_per_file, &path)?;
    }
    Ok(())
}
