//! A data set in memory: images as f32 in [-1, 1], planar, resized to `image_size`.

use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::download::ensure_files;
use super::error::DataError;
use super::files::{self, KnownFile};
use super::settings::{DatasetConfig, DatasetName};
use super::{captioned, cifar10, idx, image_folder, resize};

/// Which part of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Test => "test",
        }
    }
}

pub const MNIST_CLASSES: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];

pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
];

/// Images and labels of one split, in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// N x C x H x W values in [-1, 1].
    pub images: Vec<f32>,
    /// Class index of each image, into `class_names` (0 for every image when `class_names`
    /// is empty: a captioned folder without classes).
    pub labels: Vec<u32>,
    pub channels: usize,
    /// Side of the square images.
    pub size: usize,
    pub class_names: Vec<String>,
    /// Caption of each image, for captioned image folders.
    pub captions: Option<Vec<String>>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per image: C x H x W.
    pub fn image_len(&self) -> usize {
        self.channels * self.size * self.size
    }

    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// Image `i`, C x H x W values. Panics if `i >= len()`.
    pub fn image(&self, i: usize) -> &[f32] {
        let l = self.image_len();
        &self.images[i * l..(i + 1) * l]
    }

    /// The caption of image `i`, when the data set has captions.
    pub fn caption(&self, i: usize) -> Option<&str> {
        self.captions.as_ref()?.get(i).map(String::as_str)
    }

    /// Puts the images of `other` (of the same shape and classes) after these.
    pub fn append(&mut self, other: Dataset) -> Result<(), DataError> {
        if (other.channels, other.size) != (self.channels, self.size)
            || other.class_names != self.class_names
            || other.captions.is_some() != self.captions.is_some()
        {
            return Err(DataError::Config {
                key: "name",
                message: "the two splits differ in image shape, classes or captions".into(),
            });
        }
        self.images.extend(other.images);
        self.labels.extend(other.labels);
        if let (Some(mine), Some(theirs)) = (&mut self.captions, other.captions) {
            mine.extend(theirs);
        }
        Ok(())
    }

    /// The images (concatenated, B x C x H x W) and labels at `indices`, in that order.
    /// Panics if an index is out of range.
    pub fn gather(&self, indices: &[usize]) -> (Vec<f32>, Vec<u32>) {
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        (images, labels)
    }
}

/// Loads one split of the data set `cfg` describes, resized to `cfg.image_size` and scaled to
/// [-1, 1]; for the train split, only the first `cfg.train_limit` images (0: all).
/// `env_data_dir` is the value of `LDM_DATA_DIR` (passed in, so tests need not set it).
pub fn load(
    cfg: &DatasetConfig,
    split: Split,
    env_data_dir: Option<&str>,
) -> Result<Dataset, DataError> {
    if cfg.image_size == 0 {
        return Err(DataError::Config {
            key: "image_size",
            message: "must be at least 1".into(),
        });
    }
    let limit = limit(cfg, split);
    match cfg.name {
        DatasetName::Mnist => load_idx(cfg, split, env_data_dir, &MNIST_CLASSES, limit),
        DatasetName::FashionMnist => {
            load_idx(cfg, split, env_data_dir, &FASHION_MNIST_CLASSES, limit)
        }
        DatasetName::Cifar10 => cifar10::load(
            &cifar10::Source::new(cfg, env_data_dir),
            split,
            (cfg.channels, cfg.image_size),
            limit,
        ),
        DatasetName::ImageFolder => image_folder::load(cfg, &cfg.columns(), split, limit),
    }
}

/// How many images of `split` are used: `train_limit` of the training split (`None`: all).
fn limit(cfg: &DatasetConfig, split: Split) -> Option<usize> {
    match split {
        Split::Train if cfg.train_limit > 0 => Some(cfg.train_limit),
        _ => None,
    }
}

/// The folder of an image folder data set, when it is a captioned one.
fn captioned_root(cfg: &DatasetConfig) -> Result<Option<&Path>, DataError> {
    if cfg.name != DatasetName::ImageFolder {
        return Ok(None);
    }
    let root = cfg.root.as_deref().ok_or(DataError::NoRoot)?;
    Ok(captioned::train_metadata(root)?.map(|_| root))
}

/// The class names of the data set `cfg` describes, without loading its images (empty for a
/// captioned folder without classes).
pub fn class_names(cfg: &DatasetConfig) -> Result<Vec<String>, DataError> {
    let fixed = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
    match cfg.name {
        DatasetName::Mnist => Ok(fixed(&MNIST_CLASSES)),
        DatasetName::FashionMnist => Ok(fixed(&FASHION_MNIST_CLASSES)),
        DatasetName::Cifar10 => Ok(fixed(&cifar10::CLASSES)),
        DatasetName::ImageFolder => match captioned_root(cfg)? {
            Some(root) => captioned::class_names(root, &cfg.columns()),
            None => image_folder::class_names(cfg.root.as_deref().ok_or(DataError::NoRoot)?),
        },
    }
}

/// The captions of `split` (after `train_limit`), read from the metadata without decoding an
/// image; `None` for data sets without captions.
pub fn captions(cfg: &DatasetConfig, split: Split) -> Result<Option<Vec<String>>, DataError> {
    let Some(root) = captioned_root(cfg)? else {
        return Ok(None);
    };
    let mut captions = captioned::captions(root, &cfg.columns(), split)?;
    if let Some(l) = limit(cfg, split) {
        captions.truncate(l);
    }
    Ok(Some(captions))
}

/// Images in each split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetCounts {
    pub train: usize,
    pub test: usize,
}

/// How many images each split of `cfg` holds (after `train_limit`), without loading them.
pub fn counts(cfg: &DatasetConfig) -> Result<DatasetCounts, DataError> {
    let (train, test) = match cfg.name {
        DatasetName::Mnist | DatasetName::FashionMnist => (60_000, 10_000),
        DatasetName::Cifar10 => (
            cifar10::TRAIN_FILES.len() * cifar10::RECORDS_PER_FILE,
            cifar10::RECORDS_PER_FILE,
        ),
        DatasetName::ImageFolder => {
            let root = cfg.root.as_deref().ok_or(DataError::NoRoot)?;
            let count = |split| match captioned_root(cfg)? {
                Some(_) => captioned::count(root, &cfg.columns(), split),
                None => image_folder::count(root, split),
            };
            (count(Split::Train)?, count(Split::Test)?)
        }
    };
    let train = match cfg.train_limit {
        0 => train,
        limit => train.min(limit),
    };
    Ok(DatasetCounts { train, test })
}

/// Checks, before a run starts, that every file of the data set is there (downloading the
/// missing ones if allowed) and intact, so a run never begins without its data.
pub fn preflight(cfg: &DatasetConfig, env_data_dir: Option<&str>) -> Result<(), DataError> {
    if cfg.name == DatasetName::Cifar10 {
        return cifar10::preflight(&cifar10::Source::new(cfg, env_data_dir));
    }
    match files::known_files(cfg.name) {
        Some(set) => {
            let wanted = set.all();
            let paths = ensure_files(cfg, &wanted, env_data_dir)?;
            for (path, file) in paths.iter().zip(&wanted) {
                read(path, file)?;
            }
            Ok(())
        }
        None => match captioned_root(cfg)? {
            Some(root) => captioned::preflight(root, &cfg.columns()),
            None => {
                image_folder::class_names(cfg.root.as_deref().ok_or(DataError::NoRoot)?).map(|_| ())
            }
        },
    }
}

fn load_idx(
    cfg: &DatasetConfig,
    split: Split,
    env_data_dir: Option<&str>,
    classes: &[&str],
    limit: Option<usize>,
) -> Result<Dataset, DataError> {
    if cfg.channels != 1 {
        return Err(DataError::Config {
            key: "channels",
            message: format!(
                "{} images have 1 channel, not {}",
                cfg.name.as_str(),
                cfg.channels
            ),
        });
    }
    let Some(set) = files::known_files(cfg.name) else {
        // Unreachable: only IDX data sets come here.
        return Err(DataError::Config {
            key: "name",
            message: format!("{} is not an IDX data set", cfg.name.as_str()),
        });
    };
    let (images_file, labels_file) = set.split(split);
    let paths = ensure_files(cfg, &[images_file, labels_file], env_data_dir)?;
    let (images_path, labels_path) = (&paths[0], &paths[1]);
    let images = idx::parse_images(&read(images_path, &images_file)?, images_path)?;
    let labels = idx::parse_labels(&read(labels_path, &labels_file)?, labels_path)?;
    idx::check_pair(&images, &labels, images_path, labels_path)?;

    let count = limit.map_or(images.count, |l| l.min(images.count));
    let size = cfg.image_size;
    let (rows, cols) = (images.rows, images.cols);
    let mut out = vec![0.0f32; count * size * size];
    if count > 0 {
        out.par_chunks_mut(size * size)
            .zip(images.pixels.par_chunks(rows * cols))
            .for_each(|(dst, src)| resize::prepare_u8_into(src, 1, (rows, cols), size, dst));
    }
    Ok(Dataset {
        images: out,
        labels: labels[..count].iter().map(|&l| u32::from(l)).collect(),
        channels: 1,
        size,
        class_names: classes.iter().map(|c| c.to_string()).collect(),
        captions: None,
    })
}

fn read(path: &Path, file: &KnownFile) -> Result<Vec<u8>, DataError> {
    files::read_verified(path, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        Dataset {
            images: (0..3 * 2 * 2 * 2).map(|v| v as f32).collect(),
            labels: vec![7, 8, 9],
            channels: 2,
            size: 2,
            class_names: vec![],
            captions: Some(vec!["a".into(), "b".into(), "c".into()]),
        }
    }

    #[test]
    fn image_and_gather() {
        let d = tiny();
        assert_eq!(d.len(), 3);
        assert!(!d.is_empty());
        assert_eq!(d.image_len(), 8);
        assert_eq!(
            d.image(1),
            &(8..16).map(|v| v as f32).collect::<Vec<_>>()[..]
        );
        let (x, y) = d.gather(&[2, 0, 2]);
        assert_eq!(y, vec![9, 7, 9]);
        assert_eq!(x.len(), 24);
        assert_eq!(x[0], 16.0);
        assert_eq!(x[8], 0.0);
        assert_eq!(x[23], 23.0);
        assert_eq!((d.caption(1), d.caption(3)), (Some("b"), None));
    }

    #[test]
    fn append_puts_the_other_split_after() {
        let mut d = tiny();
        d.append(tiny()).unwrap();
        assert_eq!((d.len(), d.images.len()), (6, 48));
        assert_eq!(d.labels, [7, 8, 9, 7, 8, 9]);
        assert_eq!(d.caption(4), Some("b"));
        assert_eq!(d.image(3), tiny().image(0));
        let other = Dataset { size: 1, ..tiny() };
        assert!(d.append(other).is_err());
    }

    #[test]
    fn config_errors_name_the_key() {
        let cfg = DatasetConfig {
            image_size: 0,
            ..DatasetConfig::default()
        };
        let err = load(&cfg, Split::Train, None).unwrap_err();
        assert!(err.to_string().starts_with("dataset.image_size"), "{err}");
        let cfg = DatasetConfig {
            channels: 3,
            root: Some("/nonexistent".into()),
            ..DatasetConfig::default()
        };
        let err = load(&cfg, Split::Train, None).unwrap_err();
        assert!(err.to_string().contains("1 channel, not 3"), "{err}");
    }
}
