//! `[dataset]`: which data set, where its files are, and how images are prepared.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::settings::Checks;

/// Which data set, and where its files are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetConfig {
    /// `mnist`, `fashion_mnist` (IDX files) or `image_folder` (PNG files, one folder per class).
    pub name: DatasetName,
    /// Folder holding the files. Unset: `$LDM_DATA_DIR/<name>`, else `data/<name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Side of the square images the models see (MNIST's 28x28 are resized bilinearly).
    pub image_size: usize,
    /// Colour channels: 1 (grey) or 3 (RGB, `image_folder` only).
    pub channels: usize,
    /// Download missing IDX files from `mirrors` (checksums are always verified).
    pub download: bool,
    /// Base URLs tried in order for missing IDX files. Empty: the standard public mirrors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
    /// Use only the first N training images (0: all). For quick experiments and tests.
    pub train_limit: usize,
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
}

/// The data sets ldm-run can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatasetName {
    #[default]
    Mnist,
    FashionMnist,
    ImageFolder,
}

impl DatasetName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion_mnist",
            Self::ImageFolder => "image_folder",
        }
    }
}
