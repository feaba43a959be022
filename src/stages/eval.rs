//! `kind = "eval"`: measured sample quality. Loads the diffusion stage's model (EMA weights)
//! and the classifier stage's network, generates `samples` images for prompts drawn like
//! training prompts, and reports
//!
//! - the conditional accuracy: how many samples the classifier labels as their prompt's class,
//!   overall and per class;
//! - the Frechet distance between the samples' and the reference images' penultimate
//!   classifier features, and for calibration the distance between `samples` real reference
//!   images and the rest of the reference, and the distance of those real images after an
//!   autoencoder round trip (what the autoencoder alone costs);
//! - the autoencoder's reconstruction PSNR and SSIM on `eval_images` test images;
//! - accuracy and Frechet distance at every scale of `guidance_sweep`, and with every sampler
//!   of `sampler_sweep` (same prompts and starting noise), with each sampler's network
//!   evaluations per sample and seconds per 1000 samples.
//!
//! The prompts and starting noise come from `sample_seed` (default: the experiment's seed), so
//! a second seed shows how much the sample numbers move from draw to draw.
//!
//! The reference images and prompts are [`super::reference`]'s.
//!
//! Results go to `<stage>/metrics.json`, the manifest, TensorBoard and stderr.

use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, bail};
use candle_core::{Device, Tensor};

use super::artifacts::{self, TrainedClassifier};
use super::autoencoder::test_reconstruction;
use super::classifier::{Judged, judge, judge_tensor};
use super::context::{Outcome, Outputs, StageContext, images_tensor};
use super::eval_report::{
    EvalReport, EvalSettings, Measured, SamplerResult, ScaleResult, sampler_key, scale_key,
};
use super::pipeline::Ldm;
use super::reference::{Reference, check_classes};
use crate::conditioning::prompts;
use crate::config::stage::EvalStage;
use crate::data::{Dataset, Split};
use crate::diffusion::samplers::{SamplerSettings, SweepEntry};
use crate::log::{Progress, grid};
use crate::metrics::accuracy::Accuracy;
use crate::metrics::reference::RealFeatures;
use crate::models::classifier::FEATURES;
use crate::plan::ModelRef;
use crate::rng::Rng;

/// Images generated per sampler call.
pub(crate) const GENERATE_BATCH: usize = 100;

/// File the stage writes into its folder.
pub const METRICS_FILE: &str = "metrics.json";

/// Samples at one setting, as the classifier sees them.
struct Generated {
    judged: Judged,
    /// The first images (for the grid), (B, C, H, W) in [-1, 1].
    shown: Option<Tensor>,
    /// Network evaluations per sample.
    nfe: usize,
    /// Wall-clock seconds spent sampling and decoding.
    seconds: f64,
}

pub fn run(
    ctx: &StageContext,
    spec: &EvalStage,
    model: &ModelRef,
    classifier_stage: &str,
    out: &mut Outputs,
) -> anyhow::Result<Outcome> {
    let sampling = &spec.sampling;
    let samples = &spec.measure.samples;
    let guidance_sweep = &spec.measure.guidance_sweep;
    let eval_images = &spec.test.eval_images;
    let name = &ctx.stage.name;
    let diffusion_stage = model.diffusion.clone();
    let autoencoder_stage = model.autoencoder.clone();
    let classifier_stage = classifier_stage.to_string();
    let (ldm, checkpoint_step) = artifacts::ldm(
        ctx.run,
        ctx.resolved,
        model,
        spec.input.checkpoint,
        ctx.device,
    )?;
    let judge_net = artifacts::classifier(ctx.run, ctx.resolved, &classifier_stage, ctx.device)?;
    let test = ctx.load_data(Split::Test)?;
    check_classes(
        &judge_net,
        &ldm.tokenizer,
        &test,
        &classifier_stage,
        &diffusion_stage,
    )?;
    let reference = Reference::load(ctx, &ldm.tokenizer, &test)?;
    let ref_set = reference.images(&test);
    if ref_set.len() < 4 {
        bail!(
            "stage `{name}` needs at least 4 reference images for its Frechet distances, it has {}",
            ref_set.len()
        );
    }

    eprintln!("{name}: features of the {} reference images", ref_set.len());
    let all: Vec<usize> = (0..ref_set.len()).collect();
    let real = judge(&judge_net.model, ref_set, &all, ctx.device)?;
    let reference_features = RealFeatures::new(&real.features, FEATURES)?;
    let split = real_vs_rest(
        &real.features,
        *samples,
        reference_features.scale(),
        ctx.rng("real-split"),
        ctx.rng("kid-real"),
    )?;
    let (frechet_autoencoder, kid_autoencoder) = round_trip_vs_rest(
        &ldm,
        &judge_net,
        ref_set,
        &split,
        &mut ctx.rng("kid-autoencoder"),
        ctx.device,
    )?;

    let conditional = ldm.conditioner.is_conditional();
    let sample_seed = spec.measure.sample_seed.unwrap_or(ctx.seed);
    let (words, labels) = reference.prompts(
        &ldm.tokenizer,
        *samples,
        &mut ctx.rng_of_seed(sample_seed, "prompts"),
    )?;
    let prompts: Vec<Option<String>> = words
        .into_iter()
        .map(|p| conditional.then_some(p))
        .collect();
    if !conditional && !guidance_sweep.is_empty() {
        eprintln!(
            "{name}: the model of `{diffusion_stage}` is unconditional; guidance changes nothing, \
             so guidance_sweep is skipped"
        );
    }
    let judge_set = Judge {
        net: &judge_net,
        reference: &reference_features,
        labels: &labels,
        conditional,
    };
    let measuring = Measuring {
        ctx,
        ldm: &ldm,
        judge: &judge_set,
        prompts: &prompts,
        seed: sample_seed,
    };
    let shown_count = (ctx.grid_size() * ctx.grid_size()).min(*samples);
    let Some((main_result, main)) = measuring.measure(sampling, shown_count)? else {
        return Ok(interrupted());
    };
    let mut results = vec![ScaleResult {
        guidance: sampling.guidance,
        measured: main_result.clone(),
    }];
    for scale in extra_scales(sampling.guidance, guidance_sweep, conditional) {
        let spec = SamplerSettings {
            guidance: scale,
            ..sampling.clone()
        };
        let Some((measured, _)) = measuring.measure(&spec, 0)? else {
            return Ok(interrupted());
        };
        results.push(ScaleResult {
            guidance: scale,
            measured,
        });
    }
    let mut samplers = Vec::new();
    for entry in &spec.measure.sampler_sweep {
        let Some((measured, _)) = measuring.measure(&entry.settings(sampling), 0)? else {
            return Ok(interrupted());
        };
        samplers.push(SamplerResult {
            key: sampler_key(entry),
            entry: entry.clone(),
            measured,
        });
    }
    let shown = main.shown.context("no samples were generated")?;

    let recon = test_reconstruction(&ldm.vae, &test, *eval_images, ctx.device)?;
    let per_class = if conditional {
        Accuracy::of(&main.judged.predictions, &labels, &judge_net.class_names).per_class
    } else {
        Vec::new()
    };
    let report = EvalReport {
        stage: name.clone(),
        diffusion_stage,
        classifier_stage,
        autoencoder_stage,
        settings: EvalSettings {
            seed: ctx.seed,
            sample_seed,
            sampling: sampling.clone(),
            samples: *samples,
            guidance_sweep: guidance_sweep.clone(),
            sampler_sweep: spec.measure.sampler_sweep.clone(),
            eval_images: *eval_images,
        },
        conditional,
        accuracy: main_result.accuracy,
        per_class,
        frechet: main_result.frechet,
        kid: main_result.kid,
        kid_std: main_result.kid_std,
        nfe: main_result.nfe,
        seconds_per_1000: main_result.seconds_per_1000,
        frechet_real: split.frechet,
        frechet_autoencoder,
        kid_real: split.kid,
        kid_autoencoder,
        reference_images: ref_set.len(),
        real_images: split.picked.len(),
        rest_images: ref_set.len() - split.picked.len(),
        psnr: recon.psnr,
        ssim: recon.ssim,
        reconstruction_images: recon.images,
        scales: results,
        samplers,
    };
    let mut outcome = publish(ctx, out, &report, &prompts[..shown_count], &shown)?;
    outcome.notes.insert(
        "checkpoint".into(),
        artifacts::describe(spec.input.checkpoint, checkpoint_step),
    );
    Ok(outcome)
}

/// What samples are judged against.
struct Judge<'a> {
    net: &'a TrainedClassifier,
    /// The reference images' features.
    reference: &'a RealFeatures,
    /// The class of each prompt.
    labels: &'a [u32],
    conditional: bool,
}

fn interrupted() -> Outcome {
    Outcome {
        interrupted: true,
        ..Outcome::default()
    }
}

/// The scales of `sweep` other than `main`, each once, in their order; none for an
/// unconditional model, which guidance does not change.
fn extra_scales(main: f64, sweep: &[f64], conditional: bool) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    if conditional {
        for &s in sweep {
            if s != main && !out.contains(&s) {
                out.push(s);
            }
        }
    }
    out
}

/// What every measurement of the stage shares: the model, the judge, the prompts and the seed
/// of the starting noise.
struct Measuring<'a> {
    ctx: &'a StageContext<'a>,
    ldm: &'a Ldm,
    judge: &'a Judge<'a>,
    prompts: &'a [Option<String>],
    seed: u64,
}

impl Measuring<'_> {
    /// Samples at `spec`'s settings, judged: accuracy, Frechet distance, evaluations and time.
    /// `None` when the user asked to stop.
    fn measure(
        &self,
        spec: &SamplerSettings,
        shown: usize,
    ) -> anyhow::Result<Option<(Measured, Generated)>> {
        let Some(g) = self.generate(spec, shown)? else {
            return Ok(None);
        };
        let judge = self.judge;
        let frechet = judge.reference.frechet(&g.judged.features)?;
        let kid = judge.reference.kid(
            &g.judged.features,
            &mut self.ctx.rng_of_seed(self.seed, "kid"),
        )?;
        let accuracy = judge.conditional.then(|| {
            Accuracy::of(&g.judged.predictions, judge.labels, &judge.net.class_names).overall
        });
        let measured = Measured {
            accuracy,
            frechet,
            kid: kid.mean,
            kid_std: kid.std,
            nfe: g.nfe,
            seconds_per_1000: g.seconds * 1000.0 / self.prompts.len() as f64,
        };
        eprintln!(
            "{}: {}: accuracy {}, Frechet {frechet:.3}, KID {:.5}, {} network evaluations per \
             sample, {:.1} s per 1000 samples",
            self.ctx.stage.name,
            label(spec),
            accuracy.map_or("-".to_string(), |a| format!("{:.1}%", 100.0 * a)),
            kid.mean,
            measured.nfe,
            measured.seconds_per_1000
        );
        Ok(Some((measured, g)))
    }

    /// Generates one image per prompt at `spec`'s settings and classifies them, batch by
    /// batch, from the starting noise of the `noise` stream of the seed (the same at every
    /// setting). Keeps the first `shown` images. `None` when the user asked to stop.
    fn generate(&self, spec: &SamplerSettings, shown: usize) -> anyhow::Result<Option<Generated>> {
        let ctx = self.ctx;
        let mut noise = ctx.rng_of_seed(self.seed, "noise");
        let batches = self.prompts.len().div_ceil(GENERATE_BATCH) as u64;
        let mut progress =
            Progress::new(&format!("{} {}", ctx.stage.name, label(spec)), batches, 0);
        let mut out = Generated {
            judged: Judged {
                predictions: Vec::with_capacity(self.prompts.len()),
                features: Vec::with_capacity(self.prompts.len() * FEATURES),
            },
            shown: None,
            nfe: 0,
            seconds: 0.0,
        };
        let mut kept: Vec<Tensor> = Vec::new();
        let mut kept_count = 0;
        for (i, chunk) in self.prompts.chunks(GENERATE_BATCH).enumerate() {
            if crate::dist::any(ctx.stop.load(Ordering::SeqCst)) {
                progress.finish();
                return Ok(None);
            }
            let start = Instant::now();
            let generated = self.ldm.generate(chunk, spec, &mut noise, ctx.device)?;
            ctx.device.synchronize()?;
            out.seconds += start.elapsed().as_secs_f64();
            out.nfe = generated.nfe;
            let images = generated.images;
            let judged = judge_tensor(&self.judge.net.model, &images)?;
            out.judged.predictions.extend(judged.predictions);
            out.judged.features.extend(judged.features);
            if kept_count < shown {
                let take = (shown - kept_count).min(chunk.len());
                kept.push(images.narrow(0, 0, take)?);
                kept_count += take;
            }
            progress.update(i as u64 + 1, &[]);
        }
        progress.finish();
        if !kept.is_empty() {
            out.shown = Some(Tensor::cat(&kept, 0)?);
        }
        Ok(Some(out))
    }
}

/// A measurement's settings in a few words: `dpmpp_2m_10_karras, guidance 1.5`.
fn label(spec: &SamplerSettings) -> String {
    let mut text = format!("{}, guidance {}", SweepEntry::of(spec).key(), spec.guidance);
    if spec.guidance_rescale != 0.0 {
        text.push_str(&format!(", rescale {}", spec.guidance_rescale));
    }
    text
}

/// Real test images measured against the rest of the test split.
struct RealSplit {
    /// The test images picked (at most half of the split).
    picked: Vec<usize>,
    /// The other test images' features (with the whole reference's KID scale).
    rest: RealFeatures,
    /// Frechet distance and KID between the picked images and the rest.
    frechet: f64,
    kid: f64,
}

/// Picks `count` test images with `rng` (at most half of the split) and measures their Frechet
/// distance and KID (at `kid_scale`) to the other test images.
fn real_vs_rest(
    features: &[f32],
    count: usize,
    kid_scale: f32,
    mut rng: Rng,
    mut kid_rng: Rng,
) -> anyhow::Result<RealSplit> {
    let n = features.len() / FEATURES;
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let rest_order = order.split_off(count.min(n / 2));
    let gather = |idx: &[usize]| -> Vec<f32> {
        idx.iter()
            .flat_map(|&i| &features[i * FEATURES..(i + 1) * FEATURES])
            .copied()
            .collect()
    };
    let rest = RealFeatures::with_scale(&gather(&rest_order), FEATURES, kid_scale)?;
    let picked = gather(&order);
    let frechet = rest.frechet(&picked)?;
    let kid = rest.kid(&picked, &mut kid_rng)?.mean;
    Ok(RealSplit {
        picked: order,
        rest,
        frechet,
        kid,
    })
}

/// The Frechet distance and KID between the picked test images after an autoencoder round
/// trip (decoded posterior means) and the rest: what the autoencoder alone costs the samples.
fn round_trip_vs_rest(
    ldm: &Ldm,
    judge_net: &TrainedClassifier,
    test: &Dataset,
    split: &RealSplit,
    kid_rng: &mut Rng,
    device: &Device,
) -> anyhow::Result<(f64, f64)> {
    let mut features = Vec::with_capacity(split.picked.len() * FEATURES);
    for chunk in split.picked.chunks(GENERATE_BATCH) {
        let x = images_tensor(test, chunk, device)?;
        let x_hat = ldm.vae.reconstruct(&x)?;
        features.extend(judge_tensor(&judge_net.model, &x_hat)?.features);
    }
    let frechet = split.rest.frechet(&features)?;
    let kid = split.rest.kid(&features, kid_rng)?.mean;
    Ok((frechet, kid))
}

/// Writes `metrics.json`, the grid and its prompts, the TensorBoard scalars, text and image,
/// prints the summary, and returns the outcome for the manifest.
fn publish(
    ctx: &StageContext,
    out: &mut Outputs,
    report: &EvalReport,
    prompts: &[Option<String>],
    shown: &Tensor,
) -> anyhow::Result<Outcome> {
    let name = &ctx.stage.name;
    let metrics_path = ctx.save_file(
        METRICS_FILE,
        serde_json::to_string_pretty(report)?.as_bytes(),
    )?;
    let (n, c, h, w) = shown.dims4()?;
    let cols = ctx.grid_size();
    let picture = grid::grid(&shown.flatten_all()?.to_vec1::<f32>()?, n, c, h, w, cols, 2);
    let png = ctx.save_sample("final.png", &picture)?;
    let kind = ctx.resolved.experiment.conditioning.tokenizer;
    let prompt_text = prompts::grid_text(prompts, cols, kind);
    ctx.save_sample_text("final.txt", &prompt_text)?;

    let metrics = report.metrics();
    let tags: Vec<(String, f64)> = metrics
        .iter()
        .map(|(k, v)| (format!("{name}/{k}"), *v))
        .collect();
    let refs: Vec<(&str, f64)> = tags.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    out.events.scalars(&refs, 0)?;
    let markdown = report.markdown();
    out.events.text(&format!("{name}/metrics"), &markdown, 0)?;
    out.events.image(&format!("{name}/samples"), &picture, 0)?;
    out.events.text(
        &format!("{name}/prompts"),
        &format!("```\n{prompt_text}```"),
        0,
    )?;
    out.events.flush()?;

    eprintln!("{name}: {}", summary(report));
    eprintln!(
        "{name}: wrote {} and {}",
        metrics_path.display(),
        png.display()
    );
    let notes = [
        ("metrics_file", metrics_path.display().to_string()),
        ("grid", png.display().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Ok(Outcome {
        interrupted: false,
        metrics,
        notes,
    })
}

/// One line of the headline numbers.
fn summary(r: &EvalReport) -> String {
    let mut parts = Vec::new();
    if let Some(a) = r.accuracy {
        parts.push(format!("accuracy {:.1}%", 100.0 * a));
    }
    parts.push(format!(
        "Frechet {:.3} (real vs real {:.3}, autoencoder round trip {:.3})",
        r.frechet, r.frechet_real, r.frechet_autoencoder
    ));
    parts.push(format!("PSNR {:.2} dB, SSIM {:.4}", r.psnr, r.ssim));
    let results = r
        .scales
        .iter()
        .skip(1)
        .map(|s| (scale_key(s.guidance), &s.measured))
        .chain(r.samplers.iter().map(|s| (s.key.clone(), &s.measured)));
    for (key, m) in results {
        parts.push(format!(
            "{key}: {}Frechet {:.3}",
            m.accuracy
                .map_or(String::new(), |a| format!("accuracy {:.1}%, ", 100.0 * a)),
            m.frechet
        ));
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_scales_skip_the_main_one_and_repeats() {
        assert_eq!(
            extra_scales(3.0, &[1.0, 3.0, 5.0, 1.0], true),
            vec![1.0, 5.0]
        );
        assert!(extra_scales(3.0, &[], true).is_empty());
        assert!(extra_scales(3.0, &[1.0, 5.0], false).is_empty());
    }

    #[test]
    fn real_vs_rest_is_seeded_and_picks_at_most_half() {
        let mut rng = Rng::new(1);
        let features = rng.normal_vec(40 * FEATURES);
        let a = real_vs_rest(&features, 10, 1.0, Rng::new(7), Rng::new(9)).unwrap();
        let b = real_vs_rest(&features, 10, 1.0, Rng::new(7), Rng::new(9)).unwrap();
        let c = real_vs_rest(&features, 10, 1.0, Rng::new(8), Rng::new(9)).unwrap();
        assert_eq!((a.frechet, a.picked.len()), (b.frechet, 10));
        assert_eq!(a.kid, b.kid);
        assert_ne!(a.kid, c.kid);
        assert!(
            a.kid.abs() < 0.05,
            "two halves of one Gaussian: KID near 0, got {}",
            a.kid
        );
        assert_eq!(a.picked, b.picked);
        assert_ne!(a.frechet, c.frechet);
        assert!(a.frechet > 0.0);
        let most = real_vs_rest(&features, 1000, 1.0, Rng::new(7), Rng::new(9)).unwrap();
        assert_eq!(most.picked.len(), 20);
        let mut all = most.picked.clone();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 20, "picked images are distinct");
    }
}
