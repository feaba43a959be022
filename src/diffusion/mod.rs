//! The diffusion process: schedules, training targets, samplers and guidance.

pub mod guidance;
pub mod noise;
pub mod objective;
pub mod sampler;
pub mod schedule;
