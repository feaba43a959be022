//! Reusable network blocks and the fast CPU kernels behind them.

pub mod kernels;
