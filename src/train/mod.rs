//! Training machinery shared by the stages: optimizer, clipping, EMA, learning rate, checkpoints,
//! the held-out measurement.

pub mod adam;
pub mod adam_fused;
pub mod checkpoint;
pub mod choice;
pub mod clip;
pub mod ema;
pub mod held_out;
pub mod lr;
pub mod optimized;
pub mod settings;
pub mod trainer;

pub use held_out::HeldOutSettings;
pub use lr::LrDecay;
pub use settings::{EmaSettings, TrainSettings};
