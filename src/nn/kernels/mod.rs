//! Fast CPU kernels as candle custom ops with their own backward.
