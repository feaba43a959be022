//! The sampling pipeline of a latent diffusion model: prompts through the conditioner, the
//! guided UNet through a sampler from seeded noise, and the latents through the decoder.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};

use crate::conditioning::{Conditioner, PromptTokenizer};
use crate::config::Experiment;
use crate::diffusion::guidance::Guided;
use crate::diffusion::samplers::{self, SamplerSettings};
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

/// Images a sampler made, and what they cost.
pub struct Generated {
    /// (B, C, H, W) in [-1, 1].
    pub images: Tensor,
    /// Network evaluations per sample (one guided evaluation runs both halves as one batch).
    pub nfe: usize,
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

    /// Samples one image per prompt (`None`: unconditional).
    pub fn generate(
        &self,
        prompts: &[Option<String>],
        s: &SamplerSettings,
        rng: &mut Rng,
        device: &Device,
    ) -> anyhow::Result<Generated> {
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
            rescale: s.guidance_rescale,
        };
        let cfg = s.config(self.experiment.schedule.prediction);
        let x_t = Tensor::from_vec(
            rng.normal_vec(n * c * side * side),
            (n, c, side, side),
            device,
        )?;
        // The ancestral and SDE samplers' own noise comes from a stream split off `rng` without
        // advancing it, so the next call starts from the same noise whichever sampler ran.
        let mut sampler_noise = rng.clone().children(1).remove(0);
        let sampled = samplers::sample(&guided, &self.schedule, cfg, x_t, &mut sampler_noise)?;
        let images = self
            .vae
            .decode_batched(&(sampled.x / self.scale_factor)?)?
            .clamp(-1f32, 1f32)?;
        Ok(Generated {
            images,
            nfe: sampled.nfe,
        })
    }
}
