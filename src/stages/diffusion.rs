//! `kind = "diffusion"`: trains the UNet (and the text encoder) on the latents of the frozen
//! autoencoder of the stage it needs, with classifier-free context dropout and an EMA of the
//! weights, and draws prompt grids with the EMA weights.
//!
//! Latents: the autoencoder is frozen and has no dropout at evaluation, so q(z | x) of every
//! training image never changes. The stage encodes the training set once, keeps each image's
//! posterior mean and standard deviation, and draws z = mean + std * eps per batch: the same
//! distribution as encoding every batch (as the lesson does), at a fraction of the cost. With
//! `dataset.flip` it also encodes every image's mirror (the encoder does not commute with a
//! flip) and the flip stream picks one of the two per draw.
//!
//! Prompts: the tokenizer is built at the start (the class vocabulary, or one learned from the
//! training captions) and saved as the stage's `tokenizer.json`; a resumed stage reads it back.
//! A training prompt is the image's class name or digit, or with a caption tokenizer its
//! caption.

use std::collections::BTreeMap;

use anyhow::Context;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::artifacts::{self, TOKENIZER_FILE};
use super::context::{Outcome, Outputs, StageContext, augmented_tensor, images_tensor};
use super::pipeline::{self, Ldm};
use super::training_judge::TrainingJudge;
use crate::conditioning::{Conditioner, PromptTokenizer, TokenizerKind, prompts};
use crate::config::stage::{DiffusionStage, PromptGrid};
use crate::data::{BatchOrder, FlipStream, Split, flip};
use crate::diffusion::noise::TrainingNoise;
use crate::diffusion::objective::{min_snr_weights, q_sample, target};
use crate::diffusion::samplers::SamplerSettings;
use crate::diffusion::schedule::NoiseSchedule;
use crate::log::{StageEvents, grid};
use crate::models::autoencoder::AutoencoderKl;
use crate::models::unet::UNet;
use crate::nn::params::ParamStore;
use crate::parallel;
use crate::rng::Rng;
use crate::train::checkpoint::Checkpoint;
use crate::train::choice::CheckpointChoice;
use crate::train::optimized::Optimized;
use crate::train::trainer::Trainee;

/// Posterior mean and standard deviation of every training image (then, with flips, of every
/// image's mirror), and its label and caption.
struct LatentCache {
    mean: Vec<f32>,
    std: Vec<f32>,
    labels: Vec<u32>,
    class_names: Vec<String>,
    captions: Option<Vec<String>>,
    /// (channels, side) of one latent.
    shape: (usize, usize),
}

impl LatentCache {
    fn build(vae: &AutoencoderKl, ctx: &StageContext, mirrors: bool) -> anyhow::Result<Self> {
        let data = ctx.load_data(Split::Train)?;
        let (mut mean, mut std) = (Vec::new(), Vec::new());
        let mut shape = (0, 0);
        let passes: &[bool] = if mirrors { &[false, true] } else { &[false] };
        for (&mirrored, start) in passes
            .iter()
            .flat_map(|m| (0..data.len()).step_by(256).map(move |s| (m, s)))
        {
            let idx: Vec<usize> = (start..(start + 256).min(data.len())).collect();
            let x = augmented_tensor(&data, &idx, Some(&vec![mirrored; idx.len()]), ctx.device)?;
            let both = parallel::batched(idx.len(), ctx.device, |r| {
                let post = vae.encode(&x.narrow(0, r.start, r.len())?, None)?;
                Tensor::cat(&[&post.mean, &post.std()?], 1)
            })?;
            let (_, c2, s, _) = both.dims4()?;
            let c = c2 / 2;
            shape = (c, s);
            mean.extend(both.narrow(1, 0, c)?.flatten_all()?.to_vec1::<f32>()?);
            std.extend(both.narrow(1, c, c)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Self {
            mean,
            std,
            labels: data.labels,
            class_names: data.class_names,
            captions: data.captions,
            shape,
        })
    }

    /// Training images.
    fn len(&self) -> usize {
        self.labels.len()
    }

    /// z = mean + std * eps for the images `idx` (the mirror of image `idx[k]` where
    /// `mirrored[k]`), as (B, C, s, s).
    fn sample(
        &self,
        idx: &[usize],
        mirrored: Option<&[bool]>,
        rng: &mut Rng,
        device: &candle_core::Device,
    ) -> anyhow::Result<Tensor> {
        let (c, s) = self.shape;
        let len = c * s * s;
        let mut z = Vec::with_capacity(idx.len() * len);
        for (k, &i) in idx.iter().enumerate() {
            let i = match mirrored {
                Some(m) if m[k] => self.len() + i,
                _ => i,
            };
            let (m, sd) = (
                &self.mean[i * len..(i + 1) * len],
                &self.std[i * len..(i + 1) * len],
            );
            z.extend(m.iter().zip(sd).map(|(m, sd)| m + sd * rng.normal() as f32));
        }
        Ok(Tensor::from_vec(z, (idx.len(), c, s, s), device)?)
    }
}

/// The held-out set: the first test images' posterior means (unscaled), a prompt for each,
/// timesteps spread evenly over the schedule and noise, all fixed when the stage starts.
struct HeldOut {
    latents: Tensor,
    prompts: Vec<String>,
    timesteps: Vec<usize>,
    noise: Tensor,
}

impl HeldOut {
    fn build(
        vae: &AutoencoderKl,
        tokenizer: &PromptTokenizer,
        schedule: &NoiseSchedule,
        count: usize,
        ctx: &StageContext,
    ) -> anyhow::Result<Self> {
        let test = ctx.load_data(Split::Test)?;
        let n = count.min(test.len());
        let mut means = Vec::new();
        for start in (0..n).step_by(HELD_OUT_CHUNK) {
            let idx: Vec<usize> = (start..(start + HELD_OUT_CHUNK).min(n)).collect();
            let x = images_tensor(&test, &idx, ctx.device)?;
            means.push(parallel::batched(idx.len(), ctx.device, |r| {
                Ok::<_, candle_core::Error>(vae.encode(&x.narrow(0, r.start, r.len())?, None)?.mean)
            })?);
        }
        let latents = Tensor::cat(&means, 0)?;
        let mut prompt_rng = ctx.rng("held-out-prompts");
        let prompts = (0..n)
            .map(
                |i| match (tokenizer.vocabulary(), test.captions.as_deref()) {
                    (Some(vocab), _) => vocab.prompt_for(test.labels[i], &mut prompt_rng),
                    (None, Some(captions)) => captions[i].clone(),
                    (None, None) => String::new(),
                },
            )
            .collect();
        let t_max = schedule.timesteps();
        let timesteps = (0..n).map(|i| (2 * i + 1) * t_max / (2 * n)).collect();
        let noise = Tensor::from_vec(
            ctx.rng("held-out-noise").normal_vec(latents.elem_count()),
            latents.shape(),
            ctx.device,
        )?;
        Ok(Self {
            latents,
            prompts,
            timesteps,
            noise,
        })
    }
}

/// Held-out images measured per forward pass.
const HELD_OUT_CHUNK: usize = 64;

/// Resumable positions of every random stream and the data order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    order: BatchOrder,
    prompt: Rng,
    context_drop: Rng,
    time: Rng,
    noise: Rng,
    latent: Rng,
    dropout: Rng,
    /// With `dataset.flip`: which draws take the mirrored image (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flip: Option<FlipStream>,
}

impl State {
    /// Whether to mirror each of `n` draws (`None` without flips).
    fn flips(&mut self, n: usize) -> Option<Vec<bool>> {
        self.flip.as_mut().map(|f| f.next(n))
    }
}

struct DiffusionTrainee<'a> {
    ctx: &'a StageContext<'a>,
    unet: UNet,
    conditioner: Conditioner,
    params: Optimized,
    vae: AutoencoderKl,
    tokenizer: PromptTokenizer,
    schedule: NoiseSchedule,
    latents: LatentCache,
    scale_factor: f64,
    batch_size: usize,
    noise: TrainingNoise,
    sampling: SamplerSettings,
    /// The prompts of `grid.prompts_file`, read once at the start.
    grid_prompts: Option<Vec<String>>,
    state: State,
    held_out: Option<HeldOut>,
    /// Judges samples at the held-out measurements (a classifier stage among the needs).
    judge: Option<TrainingJudge>,
    /// The autoencoder checkpoint the latents come from (saved for later stages to load).
    vae_choice: CheckpointChoice,
}

/// Trains the diffusion stage.
pub fn run(
    ctx: &StageContext,
    spec: &DiffusionStage,
    vae_stage: &str,
    judge_stage: Option<&str>,
    out: &mut Outputs<'_, '_>,
) -> anyhow::Result<Outcome> {
    let DiffusionStage {
        train,
        held_out,
        ema,
        noise,
        judge,
        sampling,
        grid,
        input,
    } = spec;
    let e = &ctx.resolved.experiment;
    let vae = artifacts::autoencoder(
        ctx.run,
        ctx.resolved,
        vae_stage,
        input.checkpoint,
        ctx.device,
    )?;
    eprintln!(
        "{}: encoding the training set with the frozen autoencoder `{vae_stage}`",
        ctx.stage.name
    );
    let latents = LatentCache::build(&vae, ctx, e.dataset.flip)?;
    let tokenizer = stage_tokenizer(ctx, &latents)?;
    if let Some(captions) = latents.captions.as_deref()
        && tokenizer.kind() != TokenizerKind::Classes
    {
        prompts::report_cuts(&tokenizer, captions, &ctx.stage.name);
    }

    let grid_prompts = grid_prompts(grid, &tokenizer, &ctx.stage.name)?;

    let store = ParamStore::seeded(ctx.seed, ctx.device);
    let (unet, conditioner) = pipeline::denoiser(e, &tokenizer, &store)?;
    let state = State {
        order: BatchOrder::new(ctx.seed, latents.len()),
        prompt: ctx.rng("prompts"),
        context_drop: ctx.rng("context-dropout"),
        time: ctx.rng("timesteps"),
        noise: ctx.rng("noise"),
        latent: ctx.rng("latent-sample"),
        dropout: ctx.rng("dropout"),
        flip: e
            .dataset
            .flip
            .then(|| FlipStream::new(ctx.rng(flip::STREAM))),
    };
    let scale_factor = match e.schedule.scale_factor {
        Some(f) => f,
        None => first_batch_scale(&latents, &state, train.batch_size, ctx)?,
    };
    let schedule = e.schedule.noise_schedule();
    let held_out_set = if held_out.enabled() {
        Some(HeldOut::build(
            &vae,
            &tokenizer,
            &schedule,
            held_out.held_out_images,
            ctx,
        )?)
    } else {
        None
    };
    let judge = match judge_stage.filter(|_| held_out.enabled()) {
        Some(stage) => Some(TrainingJudge::build(
            ctx,
            stage,
            &tokenizer,
            conditioner.is_conditional(),
            judge.judge_samples,
        )?),
        None => None,
    };
    let mut trainee = DiffusionTrainee {
        ctx,
        unet,
        conditioner,
        params: Optimized::new(store, train, ema.ema_decay)?,
        vae,
        tokenizer,
        schedule,
        latents,
        scale_factor,
        batch_size: train.batch_size,
        noise: noise.clone(),
        sampling: sampling.clone(),
        grid_prompts,
        state,
        held_out: held_out_set,
        judge,
        vae_choice: input.checkpoint,
    };
    let end = ctx.train_loop(&mut trainee, train, Some(held_out), out)?;
    let notes = BTreeMap::from([(
        "scale_factor".to_string(),
        format!("{}", trainee.scale_factor),
    )]);
    Ok(Outcome {
        interrupted: !end.finished(),
        metrics: end.final_metrics(&["loss/mse"]),
        notes,
    })
}

/// The stage's tokenizer: the one its folder holds (a resumed stage), else built as
/// `[conditioning]` asks and saved there.
fn stage_tokenizer(ctx: &StageContext, latents: &LatentCache) -> anyhow::Result<PromptTokenizer> {
    let path = ctx.run.stage(&ctx.stage.name).join(TOKENIZER_FILE);
    if path.is_file() {
        return Ok(PromptTokenizer::load(&path)?);
    }
    let cfg = &ctx.resolved.experiment.conditioning;
    let tokenizer =
        PromptTokenizer::for_config(cfg, &latents.class_names, latents.captions.as_deref())
            .with_context(|| format!("stage `{}` cannot build its tokenizer", ctx.stage.name))?;
    ctx.save_file(TOKENIZER_FILE, tokenizer.to_json()?.as_bytes())?;
    Ok(tokenizer)
}

/// The prompts of the grid's prompt file, if it names one, with their cuts reported.
fn grid_prompts(
    grid: &PromptGrid,
    tokenizer: &PromptTokenizer,
    stage: &str,
) -> anyhow::Result<Option<Vec<String>>> {
    let Some(path) = &grid.prompts_file else {
        return Ok(None);
    };
    let listed = prompts::read(path, tokenizer.kind())?;
    prompts::report_cuts(tokenizer, &listed, &format!("{stage}: {}", path.display()));
    Ok(Some(listed))
}

/// 1 / std of the latents of the first training batch (the latent diffusion paper's choice).
fn first_batch_scale(
    latents: &LatentCache,
    state: &State,
    batch: usize,
    ctx: &StageContext,
) -> anyhow::Result<f64> {
    let mut state = state.clone();
    let idx = state.order.next(batch);
    let mirrored = state.flips(idx.len());
    let z = latents.sample(&idx, mirrored.as_deref(), &mut state.latent, ctx.device)?;
    let var = f64::from(
        z.flatten_all()?
            .to_dtype(DType::F64)?
            .var(0)?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?,
    );
    let factor = 1.0 / var.sqrt().max(1e-8);
    eprintln!(
        "{}: latent scale factor {factor:.5} (1/std of the first batch)",
        ctx.stage.name
    );
    Ok(factor)
}

impl DiffusionTrainee<'_> {
    /// The model as sampling sees it: EMA weights when kept.
    fn sampling_model(&self) -> anyhow::Result<Ldm> {
        Ldm::from_tensors(
            &self.ctx.resolved.experiment,
            self.vae.clone(),
            self.params.eval_weights(),
            self.tokenizer.clone(),
            self.scale_factor,
            self.ctx.device,
        )
    }
}

impl Trainee for DiffusionTrainee<'_> {
    fn step(&mut self, _step: u64, lr: f64) -> anyhow::Result<Vec<(String, f64)>> {
        let dev = self.ctx.device;
        let p_drop = self.ctx.resolved.experiment.conditioning.context_dropout;
        let st = &mut self.state;
        let idx = st.order.next(self.batch_size);
        let b = idx.len();
        let captions = self.latents.captions.as_deref();
        let prompts: Vec<Option<String>> = idx
            .iter()
            .map(|&i| {
                let prompt = match (self.tokenizer.vocabulary(), captions) {
                    (Some(vocab), _) => vocab.prompt_for(self.latents.labels[i], &mut st.prompt),
                    (None, Some(c)) => c[i].clone(),
                    (None, None) => String::new(),
                };
                (st.context_drop.uniform() >= p_drop).then_some(prompt)
            })
            .collect();
        let refs: Vec<Option<&str>> = prompts.iter().map(|p| p.as_deref()).collect();
        let mirrored = st.flips(b);
        let z0 = self
            .latents
            .sample(&idx, mirrored.as_deref(), &mut st.latent, dev)?;
        let z0 = (z0 * self.scale_factor)?;
        let t: Vec<usize> = (0..b)
            .map(|_| st.time.below(self.schedule.timesteps()))
            .collect();
        let noise = Tensor::from_vec(st.noise.normal_vec(z0.elem_count()), z0.shape(), dev)?;
        // Offset noise and input perturbation draw from the noise stream only when switched on.
        let (input_noise, noise) = self.noise.apply(&noise, &mut st.noise)?;
        let x_t = q_sample(&self.schedule, &z0, &t, &input_noise)?;
        let t_tensor = Tensor::from_vec(t.iter().map(|&v| v as f32).collect::<Vec<_>>(), b, dev)?;
        let target = target(
            self.ctx.resolved.experiment.schedule.prediction,
            &self.schedule,
            &z0,
            &t,
            &noise,
        )?;
        let schedule = &self.ctx.resolved.experiment.schedule;
        let weights = schedule
            .min_snr_gamma
            .map(|gamma| min_snr_weights(schedule.prediction, &self.schedule, &t, gamma, dev))
            .transpose()?;
        let shards = parallel::shards(b, dev);
        let dropout = st.dropout.children(shards.len());
        let per_batch = z0.elem_count() as f64;
        let (unet, conditioner, tokenizer) = (&self.unet, &self.conditioner, &self.tokenizer);
        let (grads, terms) = parallel::grads(
            &self.params.store.vars(),
            &shards,
            |i, r| -> anyhow::Result<_> {
                let part = |x: &Tensor| x.narrow(0, r.start, r.len());
                let context = conditioner.context(tokenizer, &refs[r.clone()], dev)?;
                let mut rng = dropout[i].clone();
                let out = unet.forward(
                    &part(&x_t)?,
                    &part(&t_tensor)?,
                    context.as_ref(),
                    Some(&mut rng),
                )?;
                let squared = (out - part(&target)?)?.sqr()?;
                let mse = (squared.sum_all()? / per_batch)?;
                Ok(match &weights {
                    Some(w) => vec![
                        (squared.broadcast_mul(&part(w)?)?.sum_all()? / per_batch)?,
                        mse,
                    ],
                    None => vec![mse],
                })
            },
        )?;
        let mut logged = vec![("loss/mse".to_string(), terms[terms.len() - 1])];
        if weights.is_some() {
            logged.push(("loss/min_snr".to_string(), terms[0]));
        }
        let norm = self.params.step(&grads, lr)?;
        logged.push(("grad_norm".to_string(), norm));
        Ok(logged)
    }

    fn samples(&mut self, step: u64, events: &mut StageEvents) -> anyhow::Result<()> {
        let ldm = self.sampling_model()?;
        let stage = self.ctx.stage.name.clone();
        let cols = self.ctx.grid_size();
        let mut grids = vec![("unconditional", vec![None; cols * cols])];
        if self.conditioner.is_conditional() {
            let prompts = prompts::for_grid(
                self.grid_prompts.as_deref(),
                &self.tokenizer,
                self.latents.captions.as_deref(),
                cols * cols,
                &mut self.ctx.rng("sample-prompts"),
            )?;
            grids.insert(0, ("samples", prompts.into_iter().map(Some).collect()));
        }
        for (name, prompts) in grids {
            let images = ldm
                .generate(
                    &prompts,
                    &self.sampling,
                    &mut self.ctx.rng("sample-noise"),
                    self.ctx.device,
                )?
                .images;
            let (n, c, h, w) = images.dims4()?;
            let picture = grid::grid(
                &images.flatten_all()?.to_vec1::<f32>()?,
                n,
                c,
                h,
                w,
                cols,
                2,
            );
            let suffix = if name == "samples" {
                String::new()
            } else {
                format!("-{name}")
            };
            self.ctx
                .save_sample(&format!("step-{step:06}{suffix}.png"), &picture)?;
            events.image(&format!("{stage}/{name}"), &picture, step)?;
            if name == "samples" {
                let text = prompts::grid_text(&prompts, cols, self.tokenizer.kind());
                self.ctx
                    .save_sample_text(&format!("step-{step:06}.txt"), &text)?;
                events.text(
                    &format!("{stage}/prompts"),
                    &format!("```\n{text}```"),
                    step,
                )?;
            }
        }
        Ok(())
    }

    /// The mean squared error of the prediction target on the held-out set (training weights,
    /// no dropout, prompts always given), and with a judge its samples' metrics.
    fn held_out(&mut self) -> anyhow::Result<Vec<(String, f64)>> {
        let Some(h) = &self.held_out else {
            return Ok(Vec::new());
        };
        let dev = self.ctx.device;
        let prediction = self.ctx.resolved.experiment.schedule.prediction;
        let z0 = (&h.latents * self.scale_factor)?;
        let n = z0.dim(0)?;
        let mut sum = 0.0;
        for start in (0..n).step_by(HELD_OUT_CHUNK) {
            let len = HELD_OUT_CHUNK.min(n - start);
            let z = z0.narrow(0, start, len)?;
            let t = &h.timesteps[start..start + len];
            let noise = h.noise.narrow(0, start, len)?;
            let x_t = q_sample(&self.schedule, &z, t, &noise)?;
            let want = target(prediction, &self.schedule, &z, t, &noise)?;
            let t_tensor =
                Tensor::from_vec(t.iter().map(|&v| v as f32).collect::<Vec<_>>(), len, dev)?;
            let prompts: Vec<Option<&str>> = h.prompts[start..start + len]
                .iter()
                .map(|p| Some(p.as_str()))
                .collect();
            let (unet, conditioner, tokenizer) = (&self.unet, &self.conditioner, &self.tokenizer);
            let errors = parallel::batched(len, dev, |r| -> anyhow::Result<Tensor> {
                let part = |x: &Tensor| x.narrow(0, r.start, r.len());
                let context = conditioner.context(tokenizer, &prompts[r.clone()], dev)?;
                let out = unet.forward(&part(&x_t)?, &part(&t_tensor)?, context.as_ref(), None)?;
                Ok((out - part(&want)?)?.sqr()?.sum_all()?.reshape(1)?)
            })?;
            sum += f64::from(errors.sum_all()?.to_scalar::<f32>()?);
        }
        let mut out = vec![("loss".into(), sum / z0.elem_count() as f64)];
        if let Some(judge) = &self.judge {
            out.extend(judge.measure(&self.sampling_model()?, &self.sampling, self.ctx)?);
        }
        Ok(out)
    }

    fn checkpoint(&self, step: u64) -> anyhow::Result<Checkpoint> {
        let mut ckpt = Checkpoint::new(step, &self.state);
        ckpt.state["scale_factor"] = self.scale_factor.into();
        ckpt.state[artifacts::AUTOENCODER_CHECKPOINT] = serde_json::to_value(self.vae_choice)?;
        self.params.save("model", &mut ckpt);
        Ok(ckpt)
    }

    fn restore(&mut self, ckpt: &Checkpoint) -> anyhow::Result<()> {
        self.params.restore("model", ckpt)?;
        self.state = ckpt.stage_state()?;
        self.scale_factor = ckpt.state["scale_factor"]
            .as_f64()
            .context("scale_factor")?;
        Ok(())
    }
}
