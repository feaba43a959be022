//! Planning a run: the stage graph, the run directory and its manifest.

pub mod fingerprint;
pub mod graph;
pub mod lock;
pub mod manifest;
pub mod reuse;
pub mod run_dir;
