//! Training machinery shared by the stages: optimizer, clipping, EMA, learning rate, checkpoints.

pub mod adam;
pub mod adam_fused;
pub mod checkpoint;
pub mod clip;
pub mod ema;
pub mod lr;
pub mod optimized;
pub mod trainer;
