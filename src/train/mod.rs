//! Training machinery shared by the stages: optimizer, clipping, EMA, learning rate, checkpoints.

pub mod adam;
pub mod adam_fused;
pub mod checkpoint;
pub mod clip;
pub mod ema;
pub mod lr;
pub mod optimized;
pub mod settings;
pub mod trainer;

pub use lr::LrDecay;
pub use settings::{EmaSettings, TrainSettings};
