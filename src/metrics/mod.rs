//! Measures of sample and reconstruction quality.

pub mod accuracy;
pub mod eigen;
pub mod frechet;
pub mod kid;
pub mod psnr;
pub mod reference;
pub mod ssim;
