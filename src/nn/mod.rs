//! Reusable network blocks and the fast CPU kernels behind them.

pub mod attention;
pub mod cpu;
pub mod kernels;
pub mod layers;
pub mod params;
pub mod weights_file;
