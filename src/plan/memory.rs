//! How much memory a stage needs, estimated before it runs, so a configuration that cannot fit
//! is refused with the figures instead of aborting mid-run ("memory allocation failed").
//!
//! A training stage holds its parameters four times over (weights, gradients, Adam's two
//! moments) plus an EMA where it keeps one, the activations a batch keeps for the backward
//! pass, and its data set in memory as f32. Activations are counted from the networks' shapes
//! (every residual block keeps about [`RES_BLOCK_MAPS`] maps of its width, every attention
//! block [`ATTN_MAPS`] maps plus its two score matrices) and scaled by a factor per network
//! measured against the peak resident memory of `ldm-run bench` at two batch sizes
//! (`/usr/bin/time -f %M`, 2026-12-01, the shipped experiments): the growth per sample of the
//! autoencoder's train step was 1.8-2.3x the shape count, the UNet's 3.5-3.7x (autograd keeps
//! the intermediate results of every elementwise op, and the allocator keeps freed blocks).
//! The factors take the low end: the estimate refuses what cannot fit, it does not promise that
//! what passes will.

use std::fmt;

use crate::conditioning::TokenizerKind;
use crate::config::Experiment;
use crate::data::DatasetCounts;
use crate::models::autoencoder::AutoencoderConfig;
use crate::models::classifier::FEATURES;
use crate::models::unet::UnetConfig;
use crate::stages::eval::GENERATE_BATCH;

use super::task::Task;

/// Maps of its width one residual block keeps per sample for the backward pass.
pub const RES_BLOCK_MAPS: f64 = 6.0;
/// Maps of its width one attention block keeps per sample (norm, q, k, v, output, MLP).
pub const ATTN_MAPS: f64 = 8.0;
/// Measured over counted activations of the autoencoder's train step (see the module doc).
pub const AUTOENCODER_FACTOR: f64 = 1.8;
/// Measured over counted activations of the UNet's train step (see the module doc).
pub const UNET_FACTOR: f64 = 3.3;
/// Share of the training activations a forward pass without gradients holds at its peak.
pub const FORWARD_SHARE: f64 = 0.25;

const GIB: f64 = (1u64 << 30) as f64;

/// One stage's estimate, by part, in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub parts: Vec<(&'static str, f64)>,
}

impl Estimate {
    pub fn total(&self) -> f64 {
        self.parts.iter().map(|(_, b)| b).sum()
    }
}

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .parts
            .iter()
            .filter(|(_, b)| *b > 0.0)
            .map(|(what, b)| format!("{what} {}", gib(*b)))
            .collect();
        write!(f, "about {} ({})", gib(self.total()), parts.join(", "))
    }
}

/// Bytes as GiB for messages: `1.25 GiB`.
pub fn gib(bytes: f64) -> String {
    if bytes >= 0.1 * GIB {
        format!("{:.1} GiB", bytes / GIB)
    } else {
        format!("{:.0} MiB", bytes / (1u64 << 20) as f64)
    }
}

/// Values per sample the autoencoder's training step keeps (encoder and decoder).
fn autoencoder_values(a: &AutoencoderConfig, channels: usize, size: usize) -> f64 {
    let mut values = (channels * size * size) as f64 * 4.0;
    let blocks = (2 * a.num_res_blocks + 1) as f64;
    for (level, &w) in a.widths().iter().enumerate() {
        let r = (size >> level) as f64;
        let maps = w as f64 * r * r;
        values += blocks * RES_BLOCK_MAPS * maps;
        if a.attn_resolutions.contains(&(size >> level)) {
            values += blocks * (ATTN_MAPS * maps + 2.0 * r.powi(4));
        }
    }
    values * AUTOENCODER_FACTOR
}

/// Values per sample the UNet's training step keeps.
fn unet_values(u: &UnetConfig, latent: (usize, usize), tokens: usize) -> f64 {
    let (channels, side) = latent;
    let mut values = (channels * side * side) as f64 * 4.0;
    let blocks = (2 * u.num_res_blocks + 2) as f64;
    let heads = u.num_heads as f64;
    for (level, &w) in u.widths().iter().enumerate() {
        let r = (side >> level) as f64;
        let maps = w as f64 * r * r;
        values += blocks * RES_BLOCK_MAPS * maps;
        if u.attention_resolutions.contains(&(side >> level)) {
            let inner = (u.num_heads * u.head_channels) as f64 * r * r;
            let scores = heads * r * r * (r * r + tokens as f64);
            values += blocks * (ATTN_MAPS * inner + 2.0 * scores);
        }
    }
    values * UNET_FACTOR
}

/// The classifier's values per sample (four convolutions, two pools, two linear layers).
fn classifier_values(channels: usize, size: usize) -> f64 {
    let s = (size * size) as f64;
    (channels as f64 + 2.0 * 32.0 * 3.0 + 2.0 * 64.0 * 3.0 / 4.0) * s
}

/// The reference images samples are judged against, counted and in bytes: the test split
/// for class prompts, both splits for caption prompts (see [`crate::stages::reference`]).
fn reference_set(
    e: &Experiment,
    data: &DatasetCounts,
    train_images: f64,
    test_images: f64,
) -> (usize, f64) {
    match e.conditioning.tokenizer {
        TokenizerKind::Classes => (data.test, test_images),
        _ => (data.train + data.test, train_images + test_images),
    }
}

/// The estimate of one stage; `params` are the parameters it trains and those it holds
/// frozen (see [`super::params::held`]), `data` the sizes of its data set.
pub fn estimate(
    e: &Experiment,
    task: &Task,
    params: (usize, usize),
    data: &DatasetCounts,
) -> Estimate {
    let f32s = |values: f64| values * 4.0;
    let d = &e.dataset;
    let image = (d.channels * d.image_size * d.image_size) as f64;
    let latent = e.autoencoder.latent_shape(d.image_size);
    let latent_dims = (latent.channels, latent.side);
    let tokens = e.conditioning.max_tokens;
    let grid = (e.logging.grid_size * e.logging.grid_size) as f64;
    let train_images = f32s(data.train as f64 * image);
    let test_images = f32s(data.test as f64 * image);
    let weights = f32s(params.0 as f64);
    let frozen = ("frozen networks", f32s(params.1 as f64));
    match task {
        Task::Autoencoder(s) => {
            let per = autoencoder_values(&e.autoencoder, d.channels, d.image_size);
            Estimate {
                parts: vec![
                    ("weights, gradients and Adam", 4.0 * weights),
                    ("activations", f32s(s.train.batch_size as f64 * per)),
                    ("data", train_images + test_images),
                ],
            }
        }
        Task::Diffusion { spec, judge, .. } => {
            let per = unet_values(&e.unet, latent_dims, tokens);
            let ema = if spec.ema.ema_decay > 0.0 { 1.0 } else { 0.0 };
            // Mean and std of every image, and of its mirror with flips.
            let copies = if d.flip { 4.0 } else { 2.0 };
            let latents = f32s(
                copies * data.train as f64 * (latent.channels * latent.side * latent.side) as f64,
            );
            let mut parts = vec![
                ("weights, gradients, Adam and EMA", (4.0 + ema) * weights),
                frozen,
                ("activations", f32s(spec.train.batch_size as f64 * per)),
                ("grids", f32s(2.0 * grid * FORWARD_SHARE * per)),
                ("data", train_images + latents),
            ];
            if spec.held_out.enabled() {
                // The test split the held-out set is taken from.
                let mut held_out = test_images;
                if judge.is_some() {
                    let samples = spec.judge.judge_samples;
                    let (reference, images) = reference_set(e, data, train_images, test_images);
                    held_out += images - test_images
                        + f32s((samples + reference) as f64 * FEATURES as f64)
                        + f32s(2.0 * samples.min(GENERATE_BATCH) as f64 * FORWARD_SHARE * per);
                }
                parts.push(("held-out set and judged samples", held_out));
            }
            Estimate { parts }
        }
        Task::Classifier(s) => {
            let ema = if s.ema.ema_decay > 0.0 { 1.0 } else { 0.0 };
            let per = classifier_values(d.channels, d.image_size);
            Estimate {
                parts: vec![
                    ("weights, gradients, Adam and EMA", (4.0 + ema) * weights),
                    ("activations", f32s(s.train.batch_size as f64 * per)),
                    ("data", train_images + test_images),
                ],
            }
        }
        Task::Sample { .. } => {
            let per = unet_values(&e.unet, latent_dims, tokens);
            Estimate {
                parts: vec![
                    frozen,
                    ("activations", f32s(2.0 * grid * FORWARD_SHARE * per)),
                ],
            }
        }
        Task::Eval { spec, .. } => {
            let per = unet_values(&e.unet, latent_dims, tokens);
            let (reference, reference_images) = reference_set(e, data, train_images, test_images);
            let features = f32s((spec.measure.samples + reference) as f64 * FEATURES as f64);
            Estimate {
                parts: vec![
                    frozen,
                    (
                        "activations",
                        f32s(2.0 * GENERATE_BATCH as f64 * FORWARD_SHARE * per),
                    ),
                    ("data", reference_images + features),
                ],
            }
        }
    }
}

/// Memory this process may use: the kernel's estimate of available memory, capped by a
/// control group's limit. `None` where it cannot be read (then nothing is refused).
pub fn available() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })?;
    let mut bytes = kib * 1024.0;
    if let Some(limit) = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|t| t.trim().parse::<f64>().ok())
    {
        bytes = bytes.min(limit);
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::task;

    /// The diffusion stage's estimate of the smoke experiment with `sets`, on MNIST's split
    /// sizes.
    fn diffusion_parts(sets: &[&str]) -> Vec<(&'static str, f64)> {
        let r = crate::config::smoke(sets);
        let t = task::of("ldm", &r.experiment.stages).unwrap();
        let counts = DatasetCounts {
            train: 512,
            test: 10_000,
        };
        estimate(&r.experiment, &t, (1000, 1000), &counts).parts
    }

    fn part(parts: &[(&'static str, f64)]) -> Option<f64> {
        parts
            .iter()
            .find(|(name, _)| *name == "held-out set and judged samples")
            .map(|p| p.1)
    }

    #[test]
    fn the_held_out_set_and_the_judged_samples_are_counted() {
        assert_eq!(part(&diffusion_parts(&[])), None);
        let test_images = 10_000.0 * 32.0 * 32.0 * 4.0;
        let held = part(&diffusion_parts(&["stages.ldm.eval_every=10"])).unwrap();
        assert_eq!(held, test_images);
        let judged = part(&diffusion_parts(&[
            "stages.ldm.eval_every=10",
            "stages.ldm.needs=[\"vae\", \"clf\"]",
            "stages.ldm.judge_samples=300",
        ]))
        .unwrap();
        let features = (300.0 + 10_000.0) * FEATURES as f64 * 4.0;
        assert!(
            judged > held + features,
            "features and a batch of 100 samples' activations on top: {judged} vs {held}"
        );
    }
}
