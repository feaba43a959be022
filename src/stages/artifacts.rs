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
use crate::train::choice::CheckpointChoice;

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

/// The checkpoint `choice` of the finished training stage `stage`: its final one, the best
/// one its `keep_best` kept, or the one of a step the rotation kept.
pub fn checkpoint_of(
    run: &RunDir,
    resolved: &Resolved,
    stage: &str,
    choice: CheckpointChoice,
    device: &Device,
) -> anyhow::Result<Checkpoint> {
    let dir = run.checkpoints(stage);
    let path = match choice {
        CheckpointChoice::Last => return final_checkpoint(run, resolved, stage, device),
        CheckpointChoice::Best => {
            let best = checkpoint::best_dir(&dir);
            match checkpoint::list(&best).into_iter().next() {
                Some((_, path)) => path,
                None => bail!(
                    "stage `{stage}` kept no best checkpoint in {}: does it set keep_best?",
                    best.display()
                ),
            }
        }
        CheckpointChoice::Step(step) => {
            let path = dir.join(checkpoint::file_name(step));
            if !path.is_file() {
                let kept: Vec<String> = checkpoint::list(&dir)
                    .iter()
                    .rev()
                    .map(|(s, _)| s.to_string())
                    .collect();
                bail!(
                    "stage `{stage}` has no checkpoint of step {step}; it kept steps {}",
                    kept.join(", ")
                );
            }
            path
        }
    };
    Ok(checkpoint::load(&path, device)?)
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

/// The frozen autoencoder trained by stage `stage`, at its checkpoint `choice`.
pub fn autoencoder(
    run: &RunDir,
    resolved: &Resolved,
    stage: &str,
    choice: CheckpointChoice,
    device: &Device,
) -> anyhow::Result<AutoencoderKl> {
    let ckpt = checkpoint_of(run, resolved, stage, choice, device)?;
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

/// How a stage's manifest notes record the checkpoint it loaded: `best (step 300)`.
pub fn describe(choice: CheckpointChoice, step: u64) -> String {
    match choice {
        CheckpointChoice::Step(_) => format!("step {step}"),
        other => format!("{other} (step {step})"),
    }
}

/// Key of a diffusion checkpoint's state naming the autoencoder checkpoint it was trained on.
pub const AUTOENCODER_CHECKPOINT: &str = "autoencoder_checkpoint";

/// The latent diffusion model of `model` in `run` at the diffusion stage's checkpoint
/// `choice` (its EMA weights when it kept them), with the autoencoder checkpoint that stage
/// was trained on; and the step of the diffusion checkpoint loaded.
pub fn ldm(
    run: &RunDir,
    resolved: &Resolved,
    model: &ModelRef,
    choice: CheckpointChoice,
    device: &Device,
) -> anyhow::Result<(Ldm, u64)> {
    let stage = &model.diffusion;
    let ckpt = checkpoint_of(run, resolved, stage, choice, device)?;
    let vae_choice: CheckpointChoice =
        serde_json::from_value(ckpt.state[AUTOENCODER_CHECKPOINT].clone()).unwrap_or_default();
    let vae = autoencoder(run, resolved, &model.autoencoder, vae_choice, device)?;
    let scale_factor = ckpt.state["scale_factor"]
        .as_f64()
        .context("the checkpoint has no scale_factor")?;
    let ldm = Ldm::from_tensors(
        &resolved.experiment,
        vae,
        eval_weights(&ckpt),
        tokenizer(run, stage)?,
        scale_factor,
        device,
    )
    .with_context(|| {
        format!("the checkpoint of stage `{stage}` does not fit [unet]/[conditioning]")
    })?;
    Ok((ldm, ckpt.step))
}
