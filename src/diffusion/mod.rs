//! The diffusion process: schedules, training targets and noise, samplers, guidance, and the
//! checks their settings must pass.

pub mod guidance;
pub mod noise;
pub mod objective;
pub mod samplers;
pub mod schedule;
pub mod validate;
