//! Sample quality while a diffusion stage trains, when a classifier stage is among its needs:
//! at every held-out measurement (every `eval_every` steps) the stage draws `judge_samples`
//! images with its sampler settings and its sampling weights (EMA when kept), for the same
//! prompts and from the same starting noise each time, and measures them as an eval stage
//! does: conditional accuracy, and the Frechet distance and KID of their classifier features
//! to the reference images'. The curve shows how sample quality moves between checkpoints; the
//! time it takes is the stage's (logged with the held-out measurement and shown in progress).
//!
//! The prompts, the starting noise and KID's subsets come from their own streams of the seed,
//! drawn afresh at every measurement, so the measurement repeats bit for bit across runs and
//! across a resume.

use super::artifacts::{self, TrainedClassifier};
use super::classifier::{judge, judge_tensor};
use super::context::StageContext;
use super::eval::GENERATE_BATCH;
use super::pipeline::Ldm;
use super::reference::{Reference, check_classes};
use crate::conditioning::PromptTokenizer;
use crate::data::Split;
use crate::diffusion::samplers::SamplerSettings;
use crate::metrics::accuracy::Accuracy;
use crate::metrics::reference::RealFeatures;
use crate::models::classifier::FEATURES;

/// The classifier, the reference and the fixed prompts of the stage's judged samples.
pub struct TrainingJudge {
    net: TrainedClassifier,
    reference: RealFeatures,
    /// One per sample; `None` for an unconditional model.
    prompts: Vec<Option<String>>,
    /// The class of each prompt.
    labels: Vec<u32>,
    /// Whether the model takes prompts (else accuracy means nothing).
    conditional: bool,
}

impl TrainingJudge {
    /// Loads classifier stage `classifier_stage`, measures the reference images' features and
    /// draws `samples` prompts.
    pub fn build(
        ctx: &StageContext,
        classifier_stage: &str,
        tokenizer: &PromptTokenizer,
        conditional: bool,
        samples: usize,
    ) -> anyhow::Result<Self> {
        let stage = &ctx.stage.name;
        let net = artifacts::classifier(ctx.run, ctx.resolved, classifier_stage, ctx.device)?;
        let test = ctx.load_data(Split::Test)?;
        check_classes(&net, tokenizer, &test, classifier_stage, stage)?;
        let reference = Reference::load(ctx, tokenizer, &test)?;
        let images = reference.images(&test);
        eprintln!(
            "{stage}: features of the {} reference images for the judge `{classifier_stage}`",
            images.len()
        );
        let all: Vec<usize> = (0..images.len()).collect();
        let real = judge(&net.model, images, &all, ctx.device)?;
        let (words, labels) =
            reference.prompts(tokenizer, samples, &mut ctx.rng("judge-prompts"))?;
        Ok(Self {
            net,
            reference: RealFeatures::new(&real.features, FEATURES)?,
            prompts: words
                .into_iter()
                .map(|p| conditional.then_some(p))
                .collect(),
            labels,
            conditional,
        })
    }

    /// Draws and judges the samples of `ldm` at `sampling`: accuracy (for a conditional
    /// model), Frechet distance, KID and its standard deviation over subsets. (Their time is
    /// in the held-out measurement's `held_out/seconds`.)
    pub fn measure(
        &self,
        ldm: &Ldm,
        sampling: &SamplerSettings,
        ctx: &StageContext,
    ) -> anyhow::Result<Vec<(String, f64)>> {
        let mut noise = ctx.rng("judge-noise");
        let mut predictions = Vec::with_capacity(self.prompts.len());
        let mut features = Vec::with_capacity(self.prompts.len() * FEATURES);
        for chunk in self.prompts.chunks(GENERATE_BATCH) {
            let images = ldm
                .generate(chunk, sampling, &mut noise, ctx.device)?
                .images;
            let judged = judge_tensor(&self.net.model, &images)?;
            predictions.extend(judged.predictions);
            features.extend(judged.features);
        }
        let mut out = Vec::new();
        if self.conditional {
            let accuracy = Accuracy::of(&predictions, &self.labels, &self.net.class_names);
            out.push(("accuracy".to_string(), accuracy.overall));
        }
        out.push(("frechet".into(), self.reference.frechet(&features)?));
        let kid = self.reference.kid(&features, &mut ctx.rng("judge-kid"))?;
        out.push(("kid".into(), kid.mean));
        out.push(("kid_std".into(), kid.std));
        Ok(out)
    }
}
