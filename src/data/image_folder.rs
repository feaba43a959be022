//! `image_folder` data sets: PNG files under `<root>/train/<class>/` and `<root>/test/<class>/`,
//! or, when `train/` holds a `metadata.jsonl` or `metadata.csv`, a captioned folder
//! ([`super::captioned`]). What follows is about class folders.
//!
//! Classes are the sub-folders of `train/`, sorted by name; a label is a class's index there,
//! for both splits (a test class folder must also exist under `train/`). Images are converted to
//! `dataset.channels` (1: luma with PIL's weights `L = R*299/1000 + G*587/1000 + B*114/1000`,
//! 3: RGB; alpha is dropped), stretched to `image_size` x `image_size` with the bilinear resize,
//! and scaled to [-1, 1]. The images are ordered round-robin over classes (each class's files
//! sorted by name): first file of every class, then the second, ... so that `train_limit` keeps
//! every class represented.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::dataset::{Dataset, Split};
use super::error::DataError;
use super::metadata::Columns;
use super::settings::DatasetConfig;
use super::{captioned, decode, resize};

const LAYOUT_HINT: &str =
    "an image_folder data set holds train/<class>/*.png and test/<class>/*.png";

/// Loads one split of an image folder: a captioned folder ([`captioned`]) when `train/` holds
/// a metadata file, else class folders. `limit`: keep only the first N images.
pub fn load(
    cfg: &DatasetConfig,
    columns: &Columns,
    split: Split,
    limit: Option<usize>,
) -> Result<Dataset, DataError> {
    if cfg.channels != 1 && cfg.channels != 3 {
        return Err(DataError::Config {
            key: "channels",
            message: format!(
                "{} is not supported; expected 1 (grey) or 3 (RGB)",
                cfg.channels
            ),
        });
    }
    let root = cfg.root.as_deref().ok_or(DataError::NoRoot)?;
    if !root.is_dir() {
        return Err(DataError::MissingFolder {
            path: root.to_path_buf(),
            hint: format!("set dataset.root to an existing folder; {LAYOUT_HINT}"),
        });
    }
    if captioned::train_metadata(root)?.is_some() {
        return captioned::load(root, columns, split, (cfg.channels, cfg.image_size), limit);
    }
    let classes = class_names(root)?;
    let split_dir = root.join(split.as_str());
    if !split_dir.is_dir() {
        return Err(DataError::MissingFolder {
            path: split_dir,
            hint: LAYOUT_HINT.into(),
        });
    }

    // Files of each class present in this split, sorted.
    let mut per_class: Vec<(u32, Vec<PathBuf>)> = Vec::new();
    for dir in sub_folders(&split_dir)? {
        let name = file_name(&dir);
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(DataError::UnknownClass {
                path: dir,
                train_classes: classes,
            });
        };
        let files = class_files(&dir)?;
        if files.is_empty() {
            return Err(DataError::EmptyClass { path: dir });
        }
        per_class.push((label as u32, files));
    }
    if per_class.is_empty() {
        return Err(DataError::NoClasses { path: split_dir });
    }

    // Round-robin over classes, then the limit.
    let longest = per_class.iter().map(|(_, f)| f.len()).max().unwrap_or(0);
    let mut items: Vec<(&Path, u32)> = (0..longest)
        .flat_map(|k| {
            per_class
                .iter()
                .filter_map(move |(label, files)| files.get(k).map(|f| (f.as_path(), *label)))
        })
        .collect();
    if let Some(l) = limit {
        items.truncate(l);
    }

    let (size, channels) = (cfg.image_size, cfg.channels);
    let images: Vec<Vec<f32>> = items
        .par_iter()
        .map(|(path, _)| decode(path, channels, size))
        .collect::<Result<_, _>>()?;
    Ok(Dataset {
        images: images.concat(),
        labels: items.iter().map(|(_, l)| *l).collect(),
        channels,
        size,
        class_names: classes,
        captions: None,
    })
}

/// The class names of an image folder: the sub-folders of `<root>/train`, sorted.
pub fn class_names(root: &Path) -> Result<Vec<String>, DataError> {
    let train = root.join("train");
    if !train.is_dir() {
        return Err(DataError::MissingFolder {
            path: train,
            hint: format!("the classes are its sub-folders; {LAYOUT_HINT}"),
        });
    }
    let names = sub_folder_names(&train)?;
    if names.is_empty() {
        return Err(DataError::NoClasses { path: train });
    }
    Ok(names)
}

/// Image files of one split (a missing split folder has none), without decoding them.
pub fn count(root: &Path, split: Split) -> Result<usize, DataError> {
    let dir = root.join(split.as_str());
    if !dir.is_dir() {
        return Ok(0);
    }
    let mut n = 0;
    for class in sub_folders(&dir)? {
        n += class_files(&class)?.len();
    }
    Ok(n)
}

/// The names of the sub-folders of `dir` (hidden ones left out), sorted.
pub(crate) fn sub_folder_names(dir: &Path) -> Result<Vec<String>, DataError> {
    Ok(sub_folders(dir)?.iter().map(|d| file_name(d)).collect())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn is_hidden(p: &Path) -> bool {
    file_name(p).starts_with('.')
}

/// Entries of `dir` (hidden ones left out), sorted by name.
fn entries(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io("list", dir, e))?;
    let mut out = Vec::new();
    for entry in rd {
        let path = entry.map_err(|e| DataError::io("list", dir, e))?.path();
        if !is_hidden(&path) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

fn sub_folders(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    Ok(entries(dir)?.into_iter().filter(|p| p.is_dir()).collect())
}

/// The files of a class folder (nested folders are ignored), sorted.
fn class_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    Ok(entries(dir)?.into_iter().filter(|p| p.is_file()).collect())
}

/// Reads a PNG, converts it to `channels`, resizes to `size` and scales to [-1, 1].
fn decode(path: &Path, channels: usize, size: usize) -> Result<Vec<f32>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io("read", path, e))?;
    let img =
        decode::decode(&bytes, decode::PNG, channels).map_err(|reason| DataError::NotPng {
            path: path.to_path_buf(),
            reason,
        })?;
    Ok(resize::prepare_u8(
        &img.pixels,
        channels,
        img.height,
        img.width,
        size,
    ))
}
