//! Measures of sample and reconstruction quality.

pub mod psnr;
