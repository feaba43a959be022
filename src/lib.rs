//! ldm-run: train latent diffusion models from declarative TOML experiment files.

pub mod atomic_file;
pub mod cli;
pub mod commands;
pub mod conditioning;
pub mod config;
pub mod data;
pub mod device;
pub mod diffusion;
pub mod dist;
pub mod environment;
pub mod log;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod parallel;
pub mod plan;
pub mod resume;
pub mod rng;
pub mod runner;
pub mod settings;
pub mod slurm;
pub mod stages;
pub mod train;
