//! What finished stages left in the run folder, as later stages and `ldm-run sample` load it:
//! by stage name from the run folder, never by a path typed into a config.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use candle_core::{Device, Tensor};

use super::pipeline::Ldm;
use crate::conditioning::PromptTokenizer;
use crate::config::Resolved;
use crate::models::autoencoder::AutoencoderKl;
use crate::models::classifier::Classifier;
use crate::nn::params::ParamStore;
use crate::plan::ModelRef;
use crate::plan::run_dir::RunDir;
use crate::train::checkpoint::{self, Checkpoint};

/// Name of the tokenizer file a diffusion stage writes into its folder.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// The final checkpoint of a finished training stage.
pub fn final_checkpoint(
    run: &RunDir,
    resolved: &Resolved,
    stage: &str,
    device: &Device,
) -> anyhow::Result<Checkpoint> {
    let steps = resolved.stage(stage).map_or(0, |s| s.spec.steps());
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

/// The prompt tokenizer a diffusion stage saved in its folder.
pub fn tokenizer(run: &RunDir, stage: &str) -> anyhow::Result<PromptTokenizer> {
    Ok(PromptTokenizer::load(
        &run.stage(stage).join(TOKENIZER_FILE),
    )?)
}

/// The latent diffusion model of `model` in `run` (its EMA weights when it kept them).
pub fn ldm(
    run: &RunDir,
    resolved: &Resolved,
    model: &ModelRef,
    device: &Device,
) -> anyhow::Result<Ldm> {
    let vae = autoencoder(run, resolved, &model.autoencoder, device)?;
    let stage = &model.diffusion;
    let ckpt = final_checkpoint(run, resolved, stage, device)?;
    let scale_factor = ckpt.state["scale_factor"]
        .as_f64()
        .context("the checkpoint has no scale_factor")?;
    Ldm::from_tensors(
        &resolved.experiment,
        vae,
        eval_weights(&ckpt),
        tokenizer(run, stage)?,
        scale_factor,
        device,
    )
    .with_context(|| {
        format!("the checkpoint of stage `{stage}` does not fit [unet]/[conditioning]")
    })
}
