//! Classifier-free guidance (Ho and Salimans 2022): out = out_u + s (out_c - out_u), with the
//! conditional and unconditional halves evaluated in one batch (split over the cores).

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
                &out_u + ((&out_c - &out_u)? * self.scale)?
            }
            (cond, _) => forward(x_t, cond.as_ref()),
        }
    }
}
