//! Planning a run: the stage graph, the run directory and its manifest.

pub mod graph;
