//! The sampling pipeline of a latent diffusion model: prompts through the conditioner, the
//! guided UNet through a sampler from seeded noise, and the latents through the decoder.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};

use crate::conditioning::{Conditioner, PromptTokenizer};
use crate::config::Experiment;
use crate::diffusion::guidance::Guided;
use crate::diffusion::samplers::{self, SamplerConfig, SamplerSettings, Sigmas, Spacing};
use crate::diffusion::schedule::NoiseSchedule;
use crate::models::autoencoder::AutoencoderKl;
use crate::models::unet::UNet;
use crate::nn::params::ParamStore;
use crate::rng::Rng;

/// Builds the UNet (`unet/...`) and conditioner (`cond/...`) over one parameter store.
pub fn denoiser(
    e: &Experiment,
    tokenizer: &PromptTokenizer,
    store: &ParamStore,
) -> anyhow::Result<(UNet, Conditioner)> {
    let vb = store.vb();
    let unet = UNet::new(&e.unet, e.unet_shape(), vb.pp("unet"))?;
    let cond = Conditioner::new(
        &e.conditioning,
        tokenizer,
        e.unet.context_dim,
        vb.pp("cond"),
    )?;
    Ok((unet, cond))
}

/// A trained latent diffusion model, ready to sample.
pub struct Ldm {
    pub vae: AutoencoderKl,
    pub unet: UNet,
    pub conditioner: Conditioner,
    pub tokenizer: PromptTokenizer,
    pub schedule: NoiseSchedule,
    pub scale_factor: f64,
    pub experiment: Experiment,
}

impl Ldm {
    /// From weights named `unet/...` and `cond/...`.
    pub fn from_tensors(
        experiment: &Experiment,
        vae: AutoencoderKl,
        weights: BTreeMap<String, Tensor>,
        tokenizer: PromptTokenizer,
        scale_factor: f64,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let store = ParamStore::from_tensors(weights, false, device);
        let (unet, conditioner) = denoiser(experiment, &tokenizer, &store)?;
        Ok(Self {
            vae,
            unet,
            conditioner,
            tokenizer,
            schedule: experiment.schedule.noise_schedule(),
            scale_factor,
            experiment: experiment.clone(),
        })
    }

    /// Samples one image per prompt (`None`: unconditional), as (B, C, H, W) in [-1, 1].
    pub fn generate(
        &self,
        prompts: &[Option<String>],
        s: &SamplerSettings,
        rng: &mut Rng,
        device: &Device,
    ) -> anyhow::Result<Tensor> {
        let n = prompts.len();
        let latent = self.experiment.latent();
        let (c, side) = (latent.channels, latent.side);
        let refs: Vec<Option<&str>> = prompts.iter().map(|p| p.as_deref()).collect();
        let cond = self.conditioner.context(&self.tokenizer, &refs, device)?;
        let uncond = self
            .conditioner
            .context(&self.tokenizer, &vec![None; n], device)?;
        let guided = Guided {
            unet: &self.unet,
            cond,
            uncond,
            scale: s.guidance,
            rescale: 0.0,
        };
        let cfg = SamplerConfig {
            kind: s.sampler,
            steps: s.sampler_steps,
            eta: s.eta,
            spacing: Spacing::Linspace,
            sigmas: Sigmas::Schedule,
            prediction: self.experiment.schedule.prediction,
        };
        let x_t = Tensor::from_vec(
            rng.normal_vec(n * c * side * side),
            (n, c, side, side),
            device,
        )?;
        let z0 = samplers::sample(&guided, &self.schedule, cfg, x_t, rng)?.x;
        Ok(self
            .vae
            .decode_batched(&(z0 / self.scale_factor)?)?
            .clamp(-1f32, 1f32)?)
    }
}
