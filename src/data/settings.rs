//! `[dataset]`: which data set, where its files are, and how images are prepared.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::flip::check_flip;
use super::metadata::{self, Columns};
use crate::settings::Checks;

/// Which data set, and where its files are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetConfig {
    /// `mnist`, `fashion_mnist` (IDX files), `cifar10` (the binary archive) or `image_folder`
    /// (PNG files in one folder per class, or PNG/JPEG files with a `metadata.jsonl`/`.csv` of
    /// captions).
    pub name: DatasetName,
    /// Folder holding the files. Unset: `$LDM_DATA_DIR/<name>`, else `data/<name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Side of the square images the models see (MNIST's 28x28 are resized bilinearly).
    pub image_size: usize,
    /// Colour channels: 1 (grey) or 3 (RGB, `image_folder` and `cifar10`).
    pub channels: usize,
    /// Download missing IDX files or the CIFAR-10 archive from `mirrors` (checksums are always
    /// verified).
    pub download: bool,
    /// Base URLs tried in order for missing files. Empty: the standard public mirrors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
    /// Use only the first N training images (0: all). For quick experiments and tests.
    pub train_limit: usize,
    /// Captioned `image_folder`: the metadata column holding each image's caption.
    pub caption_column: String,
    /// Captioned `image_folder`: the metadata column naming each image's class (for class
    /// prompts and classifier stages). Unset: the sub-folders of `train/`, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
    /// Mirror a random half of the training images left to right, in the autoencoder and
    /// diffusion stages (decisions from their own seeded stream). Refused for digits.
    pub flip: bool,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            name: DatasetName::Mnist,
            root: None,
            image_size: 32,
            channels: 1,
            download: true,
            mirrors: Vec::new(),
            train_limit: 0,
            caption_column: metadata::DEFAULT_CAPTION.into(),
            label_column: None,
            flip: false,
        }
    }
}

/// Largest image side accepted: beyond it no network of this tool fits a CPU's memory.
pub const MAX_IMAGE_SIZE: usize = 1024;

impl DatasetConfig {
    pub fn check(&self) -> Checks {
        let mut c = Checks::new();
        c.count_in("image_size", self.image_size, 1, MAX_IMAGE_SIZE);
        match self.name {
            DatasetName::Mnist | DatasetName::FashionMnist if self.channels != 1 => c.fail(
                "channels",
                format!(
                    "{} images have 1 channel, not {}",
                    self.name.as_str(),
                    self.channels
                ),
            ),
            _ if self.channels != 1 && self.channels != 3 => c.fail(
                "channels",
                format!(
                    "{} is not supported; expected 1 (grey) or 3 (RGB)",
                    self.channels
                ),
            ),
            _ => {}
        }
        if self.name == DatasetName::ImageFolder && self.root.is_none() {
            c.fail(
                "root",
                "an image_folder data set needs its folder: set dataset.root",
            );
        }
        if self.name == DatasetName::ImageFolder {
            if self.caption_column.trim().is_empty() {
                c.fail(
                    "caption_column",
                    "must name a metadata column, e.g. \"text\"",
                );
            }
            if self
                .label_column
                .as_deref()
                .is_some_and(|l| l.trim().is_empty())
            {
                c.fail(
                    "label_column",
                    "must name a metadata column, e.g. \"label\"; leave it unset for classes \
                     from sub-folders",
                );
            }
        } else {
            let only = |key| {
                format!(
                    "only a captioned image_folder has metadata columns; {} has none, so leave \
                     {key} out",
                    self.name.as_str()
                )
            };
            if self.caption_column != metadata::DEFAULT_CAPTION {
                c.fail("caption_column", only("caption_column"));
            }
            if self.label_column.is_some() {
                c.fail("label_column", only("label_column"));
            }
        }
        if self.flip
            && let Err(why) = check_flip(self.name)
        {
            c.fail("flip", why);
        }
        for url in &self.mirrors {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                c.fail(
                    "mirrors",
                    format!("`{url}` is not an http:// or https:// address"),
                );
            }
        }
        c
    }

    /// The metadata columns a captioned folder is read with.
    pub fn columns(&self) -> Columns {
        Columns {
            caption: self.caption_column.clone(),
            label: self.label_column.clone(),
        }
    }
}

/// The data sets ldm-run can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatasetName {
    #[default]
    Mnist,
    FashionMnist,
    Cifar10,
    ImageFolder,
}

impl DatasetName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion_mnist",
            Self::Cifar10 => "cifar10",
            Self::ImageFolder => "image_folder",
        }
    }
}
