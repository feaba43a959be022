//! Peak signal-to-noise ratio of reconstructions, with images mapped from [-1, 1] to [0, 1].

use candle_core::{Result, Tensor};

/// Sum over the batch of each image's PSNR in dB (reconstructions clamped to the valid range;
/// a perfect reconstruction counts as 100 dB).
pub fn batch_sum(x: &Tensor, x_hat: &Tensor) -> Result<f64> {
    let x01 = ((x + 1.0)? * 0.5)?;
    let y01 = ((x_hat.clamp(-1f32, 1f32)? + 1.0)? * 0.5)?;
    let mse: Vec<f32> = (x01 - y01)?.sqr()?.flatten_from(1)?.mean(1)?.to_vec1()?;
    Ok(mse
        .iter()
        .map(|&m| {
            if m <= 0.0 {
                100.0
            } else {
                -10.0 * f64::from(m).log10()
            }
        })
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn psnr_of_known_errors() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[[[-1f32, 1.0]]], [[[0.0, 0.0]]]], &dev).unwrap();
        // First image exact (100 dB by convention); second off by 0.2 in [-1,1] = 0.1 in [0,1]
        // -> MSE 0.01 -> 20 dB.
        let y = Tensor::new(&[[[[-1f32, 1.0]]], [[[0.2, -0.2]]]], &dev).unwrap();
        let s = batch_sum(&x, &y).unwrap();
        assert!((s - 120.0).abs() < 1e-4, "{s}");
        // Out-of-range outputs are clamped before measuring.
        let z = Tensor::new(&[[[[-3f32, 3.0]]]], &dev).unwrap();
        let x1 = x.narrow(0, 0, 1).unwrap();
        assert!((batch_sum(&x1, &z).unwrap() - 100.0).abs() < 1e-9);
    }
}
