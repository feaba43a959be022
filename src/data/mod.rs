//! Data sets: IDX (MNIST, Fashion-MNIST) and image folders, download with checksums, batching.

pub mod error;
pub mod idx;
pub mod resize;
pub mod batches;
