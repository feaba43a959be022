//! ldm-run: train latent diffusion models from declarative TOML experiment files.

pub mod config;
pub mod device;
pub mod plan;
pub mod rng;
