//! `kind = "autoencoder"`: trains the AutoencoderKL with L1 reconstruction + KL (+ an optional
//! LPIPS perceptual term and an optional patch discriminator with the adaptive weight), draws reconstructions and decoded random
//! latents, and reports the test-set PSNR and SSIM at the end. With `dataset.flip`, a random
//! half of every batch is mirrored left to right (decisions from the stage's `flip` stream).

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::context::{Outcome, Outputs, StageContext, augmented_tensor, images_tensor};
use crate::config::stage::AutoencoderStage;
use crate::data::{BatchOrder, Dataset, FlipStream, Split, flip};
use crate::log::{StageEvents, grid};
use crate::metrics::{psnr, ssim};
use crate::models::autoencoder::AutoencoderKl;
use crate::models::discriminator::{Discriminator, adaptive_weight, hinge_loss};
use crate::models::lpips::Lpips;
use crate::nn::params::ParamStore;
use crate::parallel;
use crate::rng::Rng;
use crate::train::checkpoint::Checkpoint;
use crate::train::optimized::Optimized;
use crate::train::trainer::Trainee;

/// Settings of the loss.
#[derive(Debug, Clone, Copy)]
struct LossWeights {
    kl: f64,
    perceptual: f64,
    disc: f64,
    disc_start: u64,
}

/// The patch discriminator and its optimizer (only when `disc_weight` > 0).
struct Adversary {
    net: Discriminator,
    params: Optimized,
}

/// Resumable positions of the stage's random streams and data order.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    order: BatchOrder,
    noise: Rng,
    dropout: Rng,
    /// With `dataset.flip`: which images to mirror (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    flip: Option<FlipStream>,
}

struct AutoencoderTrainee<'a> {
    ctx: &'a StageContext<'a>,
    model: AutoencoderKl,
    params: Optimized,
    adversary: Option<Adversary>,
    /// The frozen LPIPS network (only when `perceptual_weight` > 0).
    lpips: Option<Lpips>,
    weights: LossWeights,
    data: Dataset,
    batch_size: usize,
    state: State,
    /// Fixed images and latents the sample grids show at every step.
    shown: Tensor,
    latents: Tensor,
    /// The test split and how many of its first images the held-out metrics measure.
    held_out: Option<(Dataset, usize)>,
}

/// Trains the autoencoder stage; the outcome holds the test-set PSNR and SSIM.
pub fn run(
    ctx: &StageContext,
    spec: &AutoencoderStage,
    out: &mut Outputs<'_, '_>,
) -> anyhow::Result<Outcome> {
    let AutoencoderStage {
        train,
        held_out,
        loss,
        test: measured,
    } = spec;
    let e = &ctx.resolved.experiment;
    let data = ctx.load_data(Split::Train)?;
    let (c, s) = (data.channels, data.size);
    let store = ParamStore::seeded(ctx.seed, ctx.device);
    let model = AutoencoderKl::new(&e.autoencoder, c, s, store.vb())?;
    let adversary = if loss.disc_weight > 0.0 {
        let dstore = ParamStore::seeded(ctx.seed ^ 0xD15C, ctx.device);
        Some(Adversary {
            net: Discriminator::new(c, dstore.vb())?,
            params: Optimized::new(dstore, train, 0.0)?,
        })
    } else {
        None
    };
    let lpips = match &loss.lpips_weights {
        Some(path) if loss.perceptual_weight > 0.0 => {
            Some(Lpips::load(&Lpips::open(path, ctx.device)?)?)
        }
        _ => None,
    };
    let n_show = (ctx.grid_size() * ctx.grid_size()).min(data.len());
    let shown = images_tensor(&data, &(0..n_show).collect::<Vec<_>>(), ctx.device)?;
    let latent = e.latent();
    let (lc, ls) = (latent.channels, latent.side);
    let mut sample_rng = ctx.rng("vae-sample-latents");
    let latents = Tensor::from_vec(
        sample_rng.normal_vec(n_show * lc * ls * ls),
        (n_show, lc, ls, ls),
        ctx.device,
    )?;
    let mut trainee = AutoencoderTrainee {
        ctx,
        model,
        params: Optimized::new(store, train, 0.0)?,
        adversary,
        lpips,
        weights: LossWeights {
            kl: loss.kl_weight,
            perceptual: loss.perceptual_weight,
            disc: loss.disc_weight,
            disc_start: loss.disc_start as u64,
        },
        state: State {
            order: BatchOrder::new(ctx.seed, data.len()),
            noise: ctx.rng("vae-posterior-noise"),
            dropout: ctx.rng("vae-dropout"),
            flip: e
                .dataset
                .flip
                .then(|| FlipStream::new(ctx.rng(flip::STREAM))),
        },
        data,
        batch_size: train.batch_size,
        shown,
        latents,
        held_out: if held_out.enabled() {
            Some((ctx.load_data(Split::Test)?, held_out.held_out_images))
        } else {
            None
        },
    };
    let end = ctx.train_loop(&mut trainee, train, Some(held_out), out)?;
    if !end.finished() {
        return Ok(Outcome {
            interrupted: true,
            ..Outcome::default()
        });
    }
    let test = ctx.load_data(Split::Test)?;
    let rec = test_reconstruction(&trainee.model, &test, measured.eval_images, ctx.device)?;
    let step = train.steps as u64;
    let name = &ctx.stage.name;
    out.events
        .scalar(&format!("{name}/test/psnr"), rec.psnr, step)?;
    out.events
        .scalar(&format!("{name}/test/ssim"), rec.ssim, step)?;
    eprintln!(
        "{name}: test PSNR {:.2} dB, SSIM {:.4} ({} images)",
        rec.psnr, rec.ssim, rec.images
    );
    let mut metrics = end.final_metrics(&["loss/rec", "loss/kl"]);
    metrics.insert("test/psnr".to_string(), rec.psnr);
    metrics.insert("test/ssim".to_string(), rec.ssim);
    Ok(Outcome {
        interrupted: false,
        metrics,
        notes: BTreeMap::new(),
    })
}

/// How well the autoencoder reconstructs test images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reconstruction {
    /// Mean PSNR in dB, images mapped to [0, 1].
    pub psnr: f64,
    /// Mean SSIM (see [`ssim`]).
    pub ssim: f64,
    /// Mean absolute error per pixel (the L1 reconstruction loss).
    pub l1: f64,
    /// Test images measured.
    pub images: usize,
}

/// Mean PSNR and SSIM of reconstructions from the posterior mean of the first `count` test
/// images (all when `count` is 0).
pub fn test_reconstruction(
    model: &AutoencoderKl,
    test: &Dataset,
    count: usize,
    device: &Device,
) -> anyhow::Result<Reconstruction> {
    let n = if count == 0 {
        test.len()
    } else {
        count.min(test.len())
    };
    let (mut psnr_sum, mut ssim_sum, mut l1_sum, mut pixels) = (0.0, 0.0, 0.0, 0);
    for start in (0..n).step_by(100) {
        let idx: Vec<usize> = (start..(start + 100).min(n)).collect();
        let x = images_tensor(test, &idx, device)?;
        let x_hat = model.reconstruct(&x)?;
        psnr_sum += psnr::batch_sum(&x, &x_hat)?;
        ssim_sum += ssim::batch_sum(&x, &x_hat)?;
        l1_sum += f64::from((&x - &x_hat)?.abs()?.sum_all()?.to_scalar::<f32>()?);
        pixels += x.elem_count();
    }
    Ok(Reconstruction {
        psnr: psnr_sum / n as f64,
        ssim: ssim_sum / n as f64,
        l1: l1_sum / pixels.max(1) as f64,
        images: n,
    })
}

impl AutoencoderTrainee<'_> {
    /// The generator's gradients, with the adversarial term balanced by the adaptive weight.
    fn generator_grads(
        &self,
        step: u64,
        x_hat: &Tensor,
        loss: &Tensor,
    ) -> anyhow::Result<(GradStore, Option<f64>)> {
        let mut grads = loss.backward()?;
        let Some(adv) = self
            .adversary
            .as_ref()
            .filter(|_| step >= self.weights.disc_start)
        else {
            return Ok((grads, None));
        };
        let g_loss = adv.net.forward(x_hat)?.mean_all()?.neg()?;
        let g_grads = g_loss.backward()?;
        let last = self.model.decoder.last_weight();
        let w = adaptive_weight(&grads, &g_grads, last)? * self.weights.disc;
        for (_, var) in self.params.store.vars() {
            if let Some(g) = g_grads.get(var.as_tensor()) {
                let sum = match grads.get(var.as_tensor()) {
                    Some(a) => (a + (g * w)?)?,
                    None => (g * w)?,
                };
                grads.insert(var.as_tensor(), sum);
            }
        }
        Ok((grads, Some(f64::from(g_loss.to_scalar::<f32>()?))))
    }
}

/// The generator's loss on one shard of a batch of `batch` images, as parts of the batch's
/// loss, with what the step logs (sums over the shard divided by the batch).
struct ShardLoss {
    x_hat: Tensor,
    /// loss, rec, nll, kl, posterior mean, posterior std, [perceptual]
    terms: Vec<Tensor>,
}

impl AutoencoderTrainee<'_> {
    fn shard_loss(
        &self,
        x: &Tensor,
        batch: usize,
        noise: &mut Rng,
        dropout: &mut Rng,
    ) -> candle_core::Result<ShardLoss> {
        let n = x.dim(0)?;
        let (share, b) = (n as f64 / batch as f64, batch as f64);
        let posterior = self.model.encode(x, Some(&mut *dropout))?;
        let z = posterior.sample(noise)?;
        let x_hat = self.model.decode(&z, Some(dropout))?;
        let rec = (x - &x_hat)?.abs()?;
        let perceptual = match &self.lpips {
            Some(net) => Some(net.distance(x, &x_hat)?),
            None => None,
        };
        let per_pixel = match &perceptual {
            Some(p) => {
                let p = (p * self.weights.perceptual)?.reshape((n, 1, 1, 1))?;
                rec.broadcast_add(&p)?
            }
            None => rec.clone(),
        };
        let nll = (per_pixel.sum_all()? / b)?;
        let kl = (posterior.kl()? * share)?;
        let loss = (&nll + (&kl * self.weights.kl)?)?;
        let pixels_per_image = (rec.elem_count() / n.max(1)) as f64;
        let latents_per_image = (posterior.mean.elem_count() / n.max(1)) as f64;
        let mut terms = vec![
            loss,
            (rec.sum_all()? / (b * pixels_per_image))?,
            nll,
            kl,
            (posterior.mean.sum_all()? / (b * latents_per_image))?,
            (posterior.std()?.sum_all()? / (b * latents_per_image))?,
        ];
        if let Some(p) = &perceptual {
            terms.push((p.sum_all()? / b)?);
        }
        Ok(ShardLoss { x_hat, terms })
    }
}

impl Trainee for AutoencoderTrainee<'_> {
    /// Without a discriminator the batch is split over the cores; with one it runs whole (the
    /// adaptive weight needs the whole batch's gradients of both terms).
    fn step(&mut self, step: u64, lr: f64) -> anyhow::Result<Vec<(String, f64)>> {
        let idx = self.state.order.next(self.batch_size);
        let mirrored = self.state.flip.as_mut().map(|f| f.next(idx.len()));
        let x = augmented_tensor(&self.data, &idx, mirrored.as_deref(), self.ctx.device)?;
        let b = idx.len();
        let (grads, terms, adversarial) = if self.adversary.is_some() {
            let (mut noise, mut dropout) = (self.state.noise.clone(), self.state.dropout.clone());
            let loss = self.shard_loss(&x, b, &mut noise, &mut dropout)?;
            (self.state.noise, self.state.dropout) = (noise, dropout);
            let (grads, g_loss) = self.generator_grads(step, &loss.x_hat, &loss.terms[0])?;
            let terms = loss
                .terms
                .iter()
                .map(|t| Ok(f64::from(t.to_scalar::<f32>()?)))
                .collect::<anyhow::Result<Vec<f64>>>()?;
            (grads, terms, g_loss.map(|g| (g, loss.x_hat)))
        } else {
            let shards = parallel::shards(b, self.ctx.device);
            let noises = self.state.noise.children(shards.len());
            let dropouts = self.state.dropout.children(shards.len());
            let (grads, terms) = parallel::grads(&self.params.store.vars(), &shards, |i, r| {
                let x = x.narrow(0, r.start, r.len())?;
                let (mut noise, mut dropout) = (noises[i].clone(), dropouts[i].clone());
                Ok::<_, candle_core::Error>(self.shard_loss(&x, b, &mut noise, &mut dropout)?.terms)
            })?;
            (grads, terms, None)
        };
        let norm = self.params.step(&grads, lr)?;
        let names = ["loss/total", "loss/rec", "loss/nll", "loss/kl"];
        let mut out: Vec<(String, f64)> = names
            .iter()
            .zip(&terms)
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        out.push(("grad_norm".to_string(), norm));
        out.push(("posterior/mean".to_string(), terms[4]));
        out.push(("posterior/std".to_string(), terms[5]));
        if let Some(p) = terms.get(6) {
            out.push(("loss/perceptual".to_string(), *p));
        }
        if let (Some(adv), Some((g, x_hat))) = (self.adversary.as_mut(), adversarial) {
            let d_loss = hinge_loss(&adv.net.forward(&x)?, &adv.net.forward(&x_hat.detach())?)?;
            adv.params.step(&d_loss.backward()?, lr)?;
            out.push(("loss/g".to_string(), g));
            out.push((
                "loss/disc".to_string(),
                f64::from(d_loss.to_scalar::<f32>()?),
            ));
        }
        Ok(out)
    }

    fn samples(&mut self, step: u64, events: &mut StageEvents) -> anyhow::Result<()> {
        let (n, c, h, w) = self.shown.dims4()?;
        let cols = self.ctx.grid_size();
        let recon = self.model.reconstruct(&self.shown)?;
        let random = self.model.decode(&self.latents, None)?;
        let flat = |t: &Tensor| -> anyhow::Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1()?) };
        let pairs = grid::pairs(&flat(&self.shown)?, &flat(&recon)?, n, c, h, w, cols, 2);
        let random = grid::grid(&flat(&random)?, n, c, h, w, cols, 2);
        let stage = &self.ctx.stage.name;
        self.ctx
            .save_sample(&format!("step-{step:06}-reconstructions.png"), &pairs)?;
        self.ctx
            .save_sample(&format!("step-{step:06}-random.png"), &random)?;
        events.image(&format!("{stage}/reconstructions"), &pairs, step)?;
        events.image(&format!("{stage}/random_latents"), &random, step)?;
        Ok(())
    }

    /// Reconstructions of the held-out test images from their posterior means (no noise, no
    /// dropout): the L1 loss, PSNR and SSIM.
    fn held_out(&mut self) -> anyhow::Result<Vec<(String, f64)>> {
        let Some((test, count)) = &self.held_out else {
            return Ok(Vec::new());
        };
        let rec = test_reconstruction(&self.model, test, *count, self.ctx.device)?;
        Ok(vec![
            ("loss".into(), rec.l1),
            ("psnr".into(), rec.psnr),
            ("ssim".into(), rec.ssim),
        ])
    }

    fn checkpoint(&self, step: u64) -> anyhow::Result<Checkpoint> {
        let mut ckpt = Checkpoint::new(step, &self.state);
        self.params.save("model", &mut ckpt);
        if let Some(adv) = &self.adversary {
            adv.params.save("disc", &mut ckpt);
        }
        Ok(ckpt)
    }

    fn restore(&mut self, ckpt: &Checkpoint) -> anyhow::Result<()> {
        self.params.restore("model", ckpt)?;
        if let Some(adv) = self.adversary.as_mut() {
            adv.params.restore("disc", ckpt)?;
        }
        self.state = ckpt.stage_state()?;
        Ok(())
    }
}
