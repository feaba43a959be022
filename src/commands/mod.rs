//! The commands of the `ldm-run` binary, as library functions.

pub mod plan;
pub mod run;
pub mod sample;
