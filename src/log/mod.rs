//! What a run reports: TensorBoard events, PNG grids, progress.
//!
//! - [`events`]: one synchronous [`EventWriter`] per run folder (scalars, images, text,
//!   HParams, restart markers), written with `tensorboard-rs`'s TFRecord framing and the
//!   `tensorboard-proto` messages; every failure is a [`LogError`], nothing panics.
//! - [`grid`]: [`GridImage`], tiling NCHW `[-1, 1]` batches into one picture, PNG encoding and
//!   atomic PNG files.
//! - [`progress`]: [`Progress`], a bar on a terminal and sparse plain lines in CI logs.

pub mod events;
pub mod grid;
pub mod progress;
pub mod settings;
pub mod stage_events;

use std::path::PathBuf;

pub use events::{EventWriter, HParamValue, SessionStatus};
pub use grid::{GridImage, PAD_VALUE, concat_h, encode_png, grid, pairs, save_png};
pub use progress::{Progress, format_duration, format_value, rate_eta};
pub use settings::LoggingConfig;
pub use stage_events::StageEvents;

/// Result of the logging functions.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

/// What went wrong while writing logs; each message names the file or folder and the OS error.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file-system operation failed, e.g. `cannot create folder runs/a: Permission denied`.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "create folder", "write event file".
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A protobuf message could not be serialised.
    #[error("cannot encode {what} for {}: {message}", path.display())]
    Encode {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    /// The pixels do not describe a valid image (wrong channel count or buffer length).
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// The PNG encoder failed.
    #[error("cannot encode PNG ({width}x{height}, {channels} channel(s)): {message}")]
    Png {
        width: usize,
        height: usize,
        channels: usize,
        message: String,
    },
}

impl LogError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        LogError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
