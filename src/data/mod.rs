//! Data sets: IDX (MNIST, Fashion-MNIST), CIFAR-10 and image folders (class folders or
//! captioned), download with checksums, batching, flips.
//!
//! [`load`] gives one split of the data set an experiment's `[dataset]` table describes, as
//! f32 images in [-1, 1] resized to `image_size`; [`BatchOrder`] draws seeded batches from it
//! with a position a checkpoint can save.

pub mod archive;
pub mod batches;
pub mod captioned;
pub mod cifar10;
pub mod dataset;
pub mod decode;
pub mod download;
pub mod emoji;
pub mod error;
pub mod files;
pub mod fit;
pub mod flip;
pub mod idx;
pub mod image_folder;
pub mod metadata;
pub mod resize;
pub mod settings;

pub use batches::BatchOrder;
pub use dataset::{Dataset, DatasetCounts, Split, captions, class_names, counts, load, preflight};
pub use error::{Attempt, DataError};
pub use files::DATA_DIR_ENV;
pub use flip::{FlipStream, check_flip, flip_horizontal};
pub use metadata::Columns;
pub use settings::{DatasetConfig, DatasetName};
