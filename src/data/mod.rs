//! Data sets: IDX (MNIST, Fashion-MNIST) and image folders, download with checksums, batching.
