//! Trained models as later stages and `ldm-run sample` get them: by stage name from the run
//! folder, never by a path typed into a config.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use candle_core::{Device, Tensor};

use crate::conditioning::{Conditioner, Vocabulary};
use crate::config::schema::{ConditioningKind, Experiment};
use crate::config::{Resolved, SamplerSpec, StageSpec};
use crate::diffusion::guidance::Guided;
use crate::diffusion::samplers::{self, SamplerConfig, Sigmas, Spacing};
use crate::diffusion::schedule::NoiseSchedule;
use crate::models::autoencoder::AutoencoderKl;
use crate::models::classifier::Classifier;
use crate::models::unet::{UNet, UnetShape};
use crate::nn::params::ParamStore;
use crate::plan::run_dir::RunDir;
use crate::rng::Rng;
use crate::train::checkpoint::{self, Checkpoint};

/// Name of the vocabulary file a diffusion stage writes into its folder.
pub const VOCAB_FILE: &str = "tokenizer.json";

/// The final checkpoint of a finished training stage.
pub fn final_checkpoint(
    run: &RunDir,
    resolved: &Resolved,
    stage: &str,
    device: &Device,
) -> anyhow::Result<Checkpoint> {
    let spec = &resolved
        .stage(stage)
        .with_context(|| format!("no stage `{stage}` in this experiment"))?
        .spec;
    let steps = spec.train().map_or(0, |t| t.steps as u64);
    let dir = run.checkpoints(stage);
    let (found, skipped) = checkpoint::latest_valid(&dir, device);
    for bad in skipped {
        eprintln!("warning: {bad}");
    }
    match found {
        Some(c) if c.step >= steps => Ok(c),
        Some(c) => bail!(
            "stage `{stage}` has not finished: its newest checkpoint is step {} of {steps}",
            c.step
        ),
        None => bail!(
            "stage `{stage}` has no valid checkpoint in {}: has it run?",
            dir.display()
        ),
    }
}

/// The weights a finished stage samples or judges with: its EMA when it kept one.
fn eval_weights(ckpt: &Checkpoint) -> BTreeMap<String, Tensor> {
    let ema = ckpt.group("model_ema");
    if ema.is_empty() {
        ckpt.group("model")
    } else {
        ema
    }
}

/// Side and channels of the autoencoder's latent.
pub fn latent_shape(e: &Experiment) -> (usize, usize) {
    let levels = e.autoencoder.ch_mult.len().max(1);
    (
        e.autoencoder.embed_dim,
        e.dataset.image_size >> (levels - 1),
    )
}

/// The frozen autoencoder trained by stage `stage`.
pub fn autoencoder(
    run: &RunDir,
    resolved: &Resolved,
    stage: &str,
    device: &Device,
) -> anyhow::Result<AutoencoderKl> {
    let ckpt = final_checkpoint(run, resolved, stage, device)?;
    let e = &resolved.experiment;
    let store = ParamStore::from_tensors(ckpt.group("model"), false, device);
    AutoencoderKl::new(
        &e.autoencoder,
        e.dataset.channels,
        e.dataset.image_size,
        store.vb(),
    )
    .with_context(|| format!("the checkpoint of stage `{stage}` does not fit [autoencoder]"))
}

/// A classifier trained by a classifier stage, and the classes it tells apart.
pub struct TrainedClassifier {
    pub model: Classifier,
    pub class_names: Vec<String>,
}

/// The frozen classifier trained by stage `stage` (its EMA weights when it kept them).
pub fn classifier(
    run: &RunDir,
    resolved: &Resolved,
    stage: &str,
    device: &Device,
) -> anyhow::Result<TrainedClassifier> {
    let ckpt = final_checkpoint(run, resolved, stage, device)?;
    let class_names: Vec<String> = serde_json::from_value(ckpt.state["class_names"].clone())
        .with_context(|| format!("the checkpoint of stage `{stage}` names no classes"))?;
    let e = &resolved.experiment;
    let weights = eval_weights(&ckpt);
    let store = ParamStore::from_tensors(weights, false, device);
    let model = Classifier::new(
        e.dataset.channels,
        e.dataset.image_size,
        class_names.len(),
        store.vb(),
    )
    .with_context(|| format!("the checkpoint of stage `{stage}` does not fit [dataset]"))?;
    Ok(TrainedClassifier { model, class_names })
}

/// The UNet's shape for this experiment.
pub fn unet_shape(e: &Experiment) -> UnetShape {
    let (latent_channels, latent_size) = latent_shape(e);
    UnetShape {
        latent_channels,
        latent_size,
        context_dim: (e.conditioning.kind != ConditioningKind::None).then_some(e.unet.context_dim),
    }
}

/// Builds the UNet (`unet/...`) and conditioner (`cond/...`) over one parameter store.
pub fn denoiser(
    e: &Experiment,
    vocab: &Vocabulary,
    store: &ParamStore,
) -> anyhow::Result<(UNet, Conditioner)> {
    let vb = store.vb();
    let unet = UNet::new(&e.unet, unet_shape(e), vb.pp("unet"))?;
    let cond = Conditioner::new(&e.conditioning, vocab, e.unet.context_dim, vb.pp("cond"))?;
    Ok((unet, cond))
}

/// A trained latent diffusion model, ready to sample.
pub struct Ldm {
    pub vae: AutoencoderKl,
    pub unet: UNet,
    pub conditioner: Conditioner,
    pub vocab: Vocabulary,
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
        vocab: Vocabulary,
        scale_factor: f64,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let store = ParamStore::from_tensors(weights, false, device);
        let (unet, conditioner) = denoiser(experiment, &vocab, &store)?;
        let s = &experiment.schedule;
        Ok(Self {
            vae,
            unet,
            conditioner,
            vocab,
            schedule: NoiseSchedule::new(s.kind, s.timesteps, s.beta_start, s.beta_end),
            scale_factor,
            experiment: experiment.clone(),
        })
    }

    /// The model trained by diffusion stage `stage` of `run` (its EMA weights when it kept them).
    pub fn load(
        run: &RunDir,
        resolved: &Resolved,
        stage: &str,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let spec = &resolved
            .stage(stage)
            .with_context(|| format!("no stage `{stage}`"))?;
        let StageSpec::Diffusion { .. } = spec.spec else {
            bail!(
                "stage `{stage}` is a {} stage, not a diffusion stage",
                spec.spec.kind().as_str()
            );
        };
        let vae_stage = spec
            .needs
            .first()
            .context("the diffusion stage names no autoencoder")?;
        let vae = autoencoder(run, resolved, vae_stage, device)?;
        let ckpt = final_checkpoint(run, resolved, stage, device)?;
        let weights = eval_weights(&ckpt);
        let vocab_path = run.stage(stage).join(VOCAB_FILE);
        let vocab: Vocabulary = serde_json::from_str(
            &std::fs::read_to_string(&vocab_path)
                .with_context(|| format!("cannot read {}", vocab_path.display()))?,
        )
        .with_context(|| format!("{} is not a vocabulary", vocab_path.display()))?;
        let scale_factor = ckpt.state["scale_factor"]
            .as_f64()
            .context("the checkpoint has no scale_factor")?;
        Self::from_tensors(
            &resolved.experiment,
            vae,
            weights,
            vocab,
            scale_factor,
            device,
        )
        .with_context(|| {
            format!("the checkpoint of stage `{stage}` does not fit [unet]/[conditioning]")
        })
    }

    /// Samples one image per prompt (`None`: unconditional), as (B, C, H, W) in [-1, 1].
    pub fn generate(
        &self,
        prompts: &[Option<String>],
        s: &SamplerSpec,
        rng: &mut Rng,
        device: &Device,
    ) -> anyhow::Result<Tensor> {
        let n = prompts.len();
        let (c, side) = latent_shape(&self.experiment);
        let refs: Vec<Option<&str>> = prompts.iter().map(|p| p.as_deref()).collect();
        let cond = self.conditioner.context(&self.vocab, &refs, device)?;
        let uncond = self
            .conditioner
            .context(&self.vocab, &vec![None; n], device)?;
        let guided = Guided {
            unet: &self.unet,
            cond,
            uncond,
            scale: s.guidance,
            rescale: 0.0,
        };
        let cfg = SamplerConfig {
            kind: s.sampler.into(),
            steps: s.steps,
            eta: s.eta,
            spacing: Spacing::Linspace,
            sigmas: Sigmas::Schedule,
            prediction: self.experiment.schedule.prediction.into(),
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

/// Prompts of a prompt-grid file: whitespace-separated words, one prompt each.
pub fn read_prompts(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read prompt file {}", path.display()))?;
    let prompts: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if prompts.is_empty() {
        bail!("prompt file {} holds no prompts", path.display());
    }
    Ok(prompts)
}

/// `count` prompts drawn like training prompts (a random class, as its name or its digit).
pub fn random_prompts(vocab: &Vocabulary, count: usize, rng: &mut Rng) -> Vec<String> {
    (0..count)
        .map(|_| {
            let label = rng.below(vocab.class_names.len()) as u32;
            vocab.prompt_for(label, rng)
        })
        .collect()
}

/// Prompts laid out `cols` per line, as written beside a sample grid.
pub fn prompt_grid_text(prompts: &[Option<String>], cols: usize) -> String {
    let words: Vec<&str> = prompts
        .iter()
        .map(|p| p.as_deref().unwrap_or("<none>"))
        .collect();
    let mut out = String::new();
    for row in words.chunks(cols.max(1)) {
        out.push_str(&row.join(" "));
        out.push('\n');
    }
    out
}
