//! Captioned image folders: `<root>/train/metadata.jsonl` (or `.csv`) and `<root>/test/...`,
//! one row per image with its `file_name` (relative to the split folder) and caption (see
//! [`super::metadata`]). PNG and JPEG files of any size and shape.
//!
//! Each image is converted to `channels` as class folders convert theirs (alpha dropped),
//! cropped to its centred square and resized to `image_size` ([`super::fit`]). Images keep
//! the metadata's row order.
//!
//! Classes, for a classifier or class prompts, come from:
//! - the label column, when one is named: the sorted distinct values of the training rows;
//! - else the sub-folders of `train/`, sorted, when there are any: a row's class is the first
//!   folder of its `file_name` (so `train/<class>/*.png` folders can simply gain captions);
//! - else nowhere: `class_names` is empty and every label is 0.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::dataset::{Dataset, Split};
use super::error::DataError;
use super::metadata::{self, Columns, Row};
use super::{decode, fit, image_folder};

/// The metadata file of the training split, when `root` is a captioned folder.
pub fn train_metadata(root: &Path) -> Result<Option<PathBuf>, DataError> {
    metadata::find(&root.join(Split::Train.as_str()))
}

/// The class names of a captioned folder (see the module's documentation).
pub fn class_names(root: &Path, columns: &Columns) -> Result<Vec<String>, DataError> {
    let train = root.join(Split::Train.as_str());
    match &columns.label {
        Some(_) => {
            let path = split_metadata(root, Split::Train)?;
            let rows = metadata::read(&path, columns)?;
            let names: BTreeSet<String> = rows.into_iter().filter_map(|r| r.label).collect();
            Ok(names.into_iter().collect())
        }
        None => image_folder::sub_folder_names(&train),
    }
}

/// Checks, before a run starts, both splits: their metadata, every row's class and caption,
/// and that every image file is there and decodes (the first bad row, in file order, is the
/// one reported). Decoding every image costs about what loading them does, once per run.
pub fn preflight(root: &Path, columns: &Columns) -> Result<(), DataError> {
    let classes = class_names(root, columns)?;
    for split in [Split::Train, Split::Test] {
        let path = split_metadata(root, split)?;
        let rows = metadata::read(&path, columns)?;
        let dir = root.join(split.as_str());
        let checked: Vec<Result<(), DataError>> = rows
            .par_iter()
            .map(|row| {
                label(row, columns, &classes, &path)?;
                decoded(&dir, row, &path, 3).map(|_| ())
            })
            .collect();
        checked.into_iter().collect::<Result<(), _>>()?;
    }
    Ok(())
}

fn missing_image(metadata: &Path, row: &Row, path: PathBuf) -> DataError {
    DataError::MissingImage {
        metadata: metadata.to_path_buf(),
        line: row.line,
        file_name: row.file_name.clone(),
        path,
    }
}

/// The metadata file of a split of a captioned folder; its absence is an error.
fn split_metadata(root: &Path, split: Split) -> Result<PathBuf, DataError> {
    let dir = root.join(split.as_str());
    metadata::find(&dir)?.ok_or_else(|| DataError::MissingMetadata {
        dir,
        train: root.join(Split::Train.as_str()),
    })
}

/// The captions of one split, in row order, without decoding an image.
pub fn captions(root: &Path, columns: &Columns, split: Split) -> Result<Vec<String>, DataError> {
    let rows = metadata::read(&split_metadata(root, split)?, columns)?;
    Ok(rows.into_iter().map(|r| r.caption).collect())
}

/// Images of one split: its metadata's rows (a split without metadata has none).
pub fn count(root: &Path, columns: &Columns, split: Split) -> Result<usize, DataError> {
    match metadata::find(&root.join(split.as_str()))? {
        Some(path) => Ok(metadata::read(&path, columns)?.len()),
        None => Ok(0),
    }
}

/// Loads one split of a captioned folder. `limit`: keep only the first N rows.
pub fn load(
    root: &Path,
    columns: &Columns,
    split: Split,
    (channels, size): (usize, usize),
    limit: Option<usize>,
) -> Result<Dataset, DataError> {
    let path = split_metadata(root, split)?;
    let mut rows = metadata::read(&path, columns)?;
    let classes = class_names(root, columns)?;
    let labels = rows
        .iter()
        .map(|r| label(r, columns, &classes, &path))
        .collect::<Result<Vec<u32>, _>>()?;
    if let Some(l) = limit {
        rows.truncate(l);
    }
    let dir = root.join(split.as_str());
    let images: Vec<Vec<f32>> = rows
        .par_iter()
        .map(|r| image(&dir, r, &path, channels, size))
        .collect::<Result<_, _>>()?;
    Ok(Dataset {
        images: images.concat(),
        labels: labels[..rows.len()].to_vec(),
        channels,
        size,
        class_names: classes,
        captions: Some(rows.into_iter().map(|r| r.caption).collect()),
    })
}

fn label(row: &Row, columns: &Columns, classes: &[String], path: &Path) -> Result<u32, DataError> {
    let (name, what) = match (&row.label, &columns.label) {
        (Some(value), Some(column)) => (value.as_str(), format!("{column} `{value}`")),
        _ if classes.is_empty() => return Ok(0),
        _ => {
            let folder = row.file_name.split('/').next().unwrap_or_default();
            let inside = row.file_name.contains('/');
            (
                if inside { folder } else { "" },
                format!("the folder of file_name {:?}", row.file_name),
            )
        }
    };
    classes
        .iter()
        .position(|c| c == name)
        .map(|i| i as u32)
        .ok_or_else(|| DataError::UnknownLabel {
            metadata: path.to_path_buf(),
            line: row.line,
            what,
            classes: classes.to_vec(),
        })
}

fn image(
    dir: &Path,
    row: &Row,
    metadata: &Path,
    channels: usize,
    size: usize,
) -> Result<Vec<f32>, DataError> {
    let img = decoded(dir, row, metadata, channels)?;
    Ok(fit::centre_crop(
        &img.pixels,
        img.channels,
        (img.height, img.width),
        size,
    ))
}

/// The image of `row` (in `dir`, listed in `metadata`), decoded to `channels`.
fn decoded(
    dir: &Path,
    row: &Row,
    metadata: &Path,
    channels: usize,
) -> Result<decode::Planar, DataError> {
    let path = dir.join(&row.file_name);
    let bytes = std::fs::read(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            missing_image(metadata, row, path.clone())
        } else {
            DataError::io("read", &path, e)
        }
    })?;
    decode::decode(&bytes, decode::PNG_OR_JPEG, channels).map_err(|reason| {
        DataError::UnreadableImage {
            metadata: metadata.to_path_buf(),
            line: row.line,
            path,
            reason,
        }
    })
}
