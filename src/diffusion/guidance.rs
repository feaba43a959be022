//! Classifier-free guidance (Ho and Salimans 2022, arXiv 2207.12598): out = out_u + s (out_c -
//! out_u), with the conditional and unconditional halves evaluated in one batch (split over the
//! cores), optionally rescaled (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample
//! Steps are Flawed", arXiv 2305.08891, Sec. 3.4) so a large scale does not over-expose.

use candle_core::{Result, Tensor};

use super::samplers::Denoiser;
use crate::models::unet::UNet;
use crate::parallel;

/// The UNet with a fixed context for every sample, guided by `scale`.
pub struct Guided<'a> {
    pub unet: &'a UNet,
    /// Context of each sample (B, S, D); `None` for an unconditional model.
    pub cond: Option<Tensor>,
    /// The null context (B, S, D) guidance pushes away from.
    pub uncond: Option<Tensor>,
    pub scale: f64,
    /// Guidance rescale phi in [0, 1]; 0 leaves the guided output as it is.
    pub rescale: f64,
}

/// The guided output pulled back towards the conditional output's spread: per sample,
/// x = guided * std(cond) / std(guided), returned as phi x + (1 - phi) guided. The standard
/// deviations are over all of a sample's elements (C, H, W). Applied to the network output
/// whatever it predicts, as the paper does with v.
pub fn rescale_guided(guided: &Tensor, cond: &Tensor, phi: f64) -> Result<Tensor> {
    let b = guided.dim(0)?;
    let std = |x: &Tensor| x.reshape((b, ()))?.var_keepdim(1)?.sqrt();
    let ratio = (std(cond)? / std(guided)?)?;
    let mut shape = vec![1; guided.rank()];
    shape[0] = b;
    let factor = ratio.affine(phi, 1.0 - phi)?.reshape(shape)?;
    guided.broadcast_mul(&factor)
}

impl Denoiser for Guided<'_> {
    fn predict(&self, x_t: &Tensor, t: f64) -> Result<Tensor> {
        let b = x_t.dim(0)?;
        let forward = |x: &Tensor, ctx: Option<&Tensor>| {
            let n = x.dim(0)?;
            let times = Tensor::from_vec(vec![t as f32; n], n, x.device())?;
            parallel::batched(n, x.device(), |r| {
                let part = |t: &Tensor| t.narrow(0, r.start, r.len());
                let ctx = ctx.map(part).transpose()?;
                self.unet
                    .forward(&part(x)?, &part(&times)?, ctx.as_ref(), None)
            })
        };
        match (&self.cond, &self.uncond) {
            (Some(cond), Some(uncond)) if self.scale != 1.0 => {
                let x2 = Tensor::cat(&[x_t, x_t], 0)?;
                let ctx = Tensor::cat(&[cond, uncond], 0)?;
                let out = forward(&x2, Some(&ctx))?;
                let (out_c, out_u) = (out.narrow(0, 0, b)?, out.narrow(0, b, b)?);
                let guided = (&out_u + ((&out_c - &out_u)? * self.scale)?)?;
                if self.rescale == 0.0 {
                    Ok(guided)
                } else {
                    rescale_guided(&guided, &out_c, self.rescale)
                }
            }
            (cond, _) => forward(x_t, cond.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::Device;

    fn per_sample_std(x: &Tensor) -> Vec<f64> {
        let b = x.dim(0).unwrap();
        let v: Vec<f64> = x.flatten_all().unwrap().to_vec1().unwrap();
        v.chunks(v.len() / b)
            .map(|c| {
                let mean = c.iter().sum::<f64>() / c.len() as f64;
                (c.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / c.len() as f64).sqrt()
            })
            .collect()
    }

    #[test]
    fn rescale_blends_towards_the_conditional_spread() {
        let mut rng = Rng::new(7);
        let mut draw = |scale: f64| {
            let v: Vec<f64> = rng
                .normal_vec(2 * 3 * 4 * 4)
                .iter()
                .map(|&x| f64::from(x) * scale)
                .collect();
            Tensor::from_vec(v, (2, 3, 4, 4), &Device::Cpu).unwrap()
        };
        let (cond, guided) = (draw(1.0), draw(3.0));
        let unchanged = rescale_guided(&guided, &cond, 0.0).unwrap();
        assert_eq!(
            unchanged.flatten_all().unwrap().to_vec1::<f64>().unwrap(),
            guided.flatten_all().unwrap().to_vec1::<f64>().unwrap()
        );
        let full = rescale_guided(&guided, &cond, 1.0).unwrap();
        let half = rescale_guided(&guided, &cond, 0.5).unwrap();
        let (sc, sg) = (per_sample_std(&cond), per_sample_std(&guided));
        for (i, (f, h)) in per_sample_std(&full)
            .iter()
            .zip(per_sample_std(&half))
            .enumerate()
        {
            assert!(
                (f - sc[i]).abs() < 1e-12,
                "sample {i}: {f} against {}",
                sc[i]
            );
            assert!((h - (sc[i] + sg[i]) / 2.0).abs() < 1e-12, "sample {i}: {h}");
        }
    }
}
