//! What planning checks beyond the values themselves, so that no stage fails on something that
//! was knowable before the first one started: the data set's classes (and captions), the
//! tokenizer the diffusion stage will build, the files the configuration names (prompt files
//! against that tokenizer, the headers of LPIPS and CLIP weight files), and whether each stage
//! fits in memory.
//!
//! A tokenizer learned from captions exists only once the diffusion stage has trained it, but
//! its training is deterministic (the same captions give the same tokenizer): planning learns
//! the very same one from the training captions, so prompt files are checked against exactly
//! what the stage will use (unknown words for `word_level`; prompts that will be cut are
//! reported by the stage, not refused), and its vocabulary sizes the text encoder.

use std::path::Path;

use super::memory;
use super::task::Task;
use crate::conditioning::prompts;
use crate::conditioning::{ConditioningKind, PromptTokenizer, TokenizerKind};
use crate::config::error::Problems;
use crate::config::stage::{DIFFUSION_JUDGED, DiffusionStage};
use crate::config::{ConfigError, Experiment, Resolved};
use crate::data::Split;
use crate::models::clip_text::{self, ClipText};
use crate::models::lpips::{self, Lpips};
use crate::nn::weights_file::WeightsFile;
use crate::train::choice::{CheckpointChoice, kept_steps};

/// Largest prompt file read (prompts, not a data set).
const MAX_PROMPT_FILE: u64 = 1 << 20;

/// Whether the memory estimate refuses stages that cannot fit on this machine (not for
/// `submit`, whose jobs run elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryCheck {
    Refuse,
    Skip,
}

/// Checks the planned `tasks` of `resolved`.
pub fn check(
    resolved: &Resolved,
    tasks: &[(String, Task)],
    memory_check: MemoryCheck,
) -> Result<(), ConfigError> {
    let mut f = Problems::new(&resolved.layered);
    let e = &resolved.experiment;
    let classes = match crate::data::class_names(&e.dataset) {
        Ok(c) => c,
        Err(err) => {
            f.fail("dataset.root", err.to_string());
            return f.into_result();
        }
    };
    let samples = tasks.iter().any(|(_, t)| {
        matches!(
            t,
            Task::Diffusion { .. } | Task::Sample { .. } | Task::Eval { .. }
        )
    });
    let tokenizer = match samples.then(|| tokenizer(e, &classes)) {
        Some(Ok(t)) => Some(t),
        Some(Err((key, message))) => {
            f.fail(key, message);
            None
        }
        None => None,
    };
    for (name, task) in tasks {
        let key = |k: &str| format!("stages.{name}.{k}");
        match task {
            Task::Classifier(_) if classes.len() < 2 => f.fail(
                "dataset.root",
                format!(
                    "the classifier of stage `{name}` needs at least 2 classes; the data set has \
                     {} ({})",
                    classes.len(),
                    classes.join(", ")
                ),
            ),
            Task::Autoencoder(s) if s.loss.perceptual_weight > 0.0 => {
                if let Some(path) = &s.loss.lpips_weights
                    && let Err(err) = lpips_header(path)
                {
                    f.fail(&key("lpips_weights"), err);
                }
            }
            Task::Diffusion { spec, judge, .. } => {
                if let (Some(path), Some(t)) = (&spec.grid.prompts_file, &tokenizer) {
                    prompt_file(&mut f, e.conditioning.kind, &key("prompts_file"), path, t);
                }
                training_judge(&mut f, name, spec, judge.as_deref(), e.conditioning.kind);
            }
            Task::Sample { spec, .. } => {
                if let (Some(path), Some(t)) = (&spec.grid.prompts_file, &tokenizer) {
                    prompt_file(&mut f, e.conditioning.kind, &key("prompts_file"), path, t);
                }
            }
            _ => {}
        }
    }
    input_checkpoints(&mut f, resolved, tasks);
    let clip = clip_files(&mut f, resolved);
    if f.problems.is_empty() && memory_check == MemoryCheck::Refuse {
        memory_fits(&mut f, resolved, tasks, &classes, tokenizer.as_ref(), clip);
    }
    f.into_result()
}

/// A classifier among a diffusion stage's needs judges samples at the held-out measurements,
/// so it needs `eval_every`; `keep_best` names a judged metric only when there is a judge (and
/// accuracy only when the model takes prompts).
fn training_judge(
    f: &mut Problems,
    name: &str,
    spec: &DiffusionStage,
    judge: Option<&str>,
    conditioning: ConditioningKind,
) {
    if let Some(judge) = judge
        && !spec.held_out.enabled()
    {
        f.fail(
            &format!("stages.{name}.eval_every"),
            format!(
                "stage `{name}` needs the classifier stage `{judge}`, which judges its samples \
                 every eval_every steps; set eval_every (e.g. 200), or remove `{judge}` from \
                 stages.{name}.needs"
            ),
        );
    }
    let Some(metric) = spec.held_out.keep_best.as_deref() else {
        return;
    };
    if judge.is_none() && DIFFUSION_JUDGED.contains(&metric) {
        f.fail(
            &format!("stages.{name}.keep_best"),
            format!(
                "`{metric}` is measured only by a diffusion stage that needs a classifier stage \
                 to judge its samples; add one to stages.{name}.needs (e.g. [\"vae\", \"clf\"]), \
                 or keep \"held_out/loss\""
            ),
        );
    } else if metric == "held_out/accuracy" && conditioning == ConditioningKind::None {
        f.fail(
            &format!("stages.{name}.keep_best"),
            "`held_out/accuracy` needs prompts, and conditioning.kind = \"none\" takes none; \
             keep \"held_out/frechet\", \"held_out/kid\" or \"held_out/loss\""
                .to_string(),
        );
    }
}

/// Each `checkpoint = "best"` names a stage that keeps its best, and each step one that
/// stage's rotation keeps.
fn input_checkpoints(f: &mut Problems, resolved: &Resolved, tasks: &[(String, Task)]) {
    for (name, task) in tasks {
        let Some((input, choice)) = task.input() else {
            continue;
        };
        let Some(spec) = resolved.stage(input).map(|s| &s.spec) else {
            continue;
        };
        let key = format!("stages.{name}.checkpoint");
        match choice {
            CheckpointChoice::Last => {}
            CheckpointChoice::Best => {
                if spec.held_out().and_then(|h| h.keep_best.as_ref()).is_none() {
                    f.fail(
                        &key,
                        format!(
                            "\"best\" needs stage `{input}` to keep its best checkpoint: set \
                             stages.{input}.keep_best (e.g. \"held_out/loss\") and eval_every"
                        ),
                    );
                }
            }
            CheckpointChoice::Step(step) => {
                if let Some(t) = spec.train() {
                    let kept = kept_steps(
                        t.steps as u64,
                        t.checkpoint_every as u64,
                        t.keep_checkpoints,
                    );
                    if !kept.contains(&step) {
                        let kept: Vec<String> = kept.iter().map(u64::to_string).collect();
                        f.fail(
                            &key,
                            format!(
                                "stage `{input}` keeps no checkpoint of step {step}: with its \
                                 checkpoint_every and keep_checkpoints it keeps steps {}",
                                kept.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// The tokenizer the diffusion stage of `e` will build for a data set of `classes`, or the key
/// to blame and why it cannot be built.
pub fn tokenizer(
    e: &Experiment,
    classes: &[String],
) -> Result<PromptTokenizer, (&'static str, String)> {
    let captions = match e.conditioning.tokenizer {
        TokenizerKind::Classes => None,
        TokenizerKind::Bpe | TokenizerKind::WordLevel => {
            crate::data::captions(&e.dataset, Split::Train)
                .map_err(|err| ("dataset.root", err.to_string()))?
        }
    };
    PromptTokenizer::for_config(&e.conditioning, classes, captions.as_deref())
        .map_err(|err| ("conditioning.tokenizer", err.to_string()))
}

/// The header of an LPIPS weights file: every tensor the network needs, with its shape.
fn lpips_header(path: &Path) -> Result<(), String> {
    let file = WeightsFile::header_only(path, "LPIPS weights file", lpips::NAMING)
        .map_err(|e| e.to_string())?;
    Lpips::load(&file).map(|_| ()).map_err(|e| e.to_string())
}

/// The CLIP weights' header and tokenizer, checked against `[unet]` and `[conditioning]`;
/// returns the text tower's parameter count.
fn clip_files(f: &mut Problems, resolved: &Resolved) -> usize {
    let c = &resolved.experiment.conditioning;
    let (ConditioningKind::Clip, Some(weights), Some(tokenizer)) =
        (c.kind, &c.clip_weights, &c.clip_tokenizer)
    else {
        return 0;
    };
    let file = match WeightsFile::header_only(weights, "CLIP weights file", clip_text::NAMING) {
        Ok(file) => file,
        Err(err) => {
            f.fail("conditioning.clip_weights", err.to_string());
            return 0;
        }
    };
    let positions = file
        .shape("text_model.embeddings.position_embedding.weight")
        .and_then(|s| s.first().copied());
    let elements = file.elements();
    match ClipText::load(file, tokenizer) {
        Ok(clip) => {
            let context = resolved.experiment.unet.context_dim;
            if clip.width != context {
                f.fail(
                    "unet.context_dim",
                    format!(
                        "{context} does not match the CLIP text encoder in {}, which is {} wide; \
                         set unet.context_dim = {}",
                        weights.display(),
                        clip.width,
                        clip.width
                    ),
                );
            }
            let tokens = resolved.experiment.conditioning.max_tokens;
            if let Some(p) = positions
                && tokens > p
            {
                f.fail(
                    "conditioning.max_tokens",
                    format!("{tokens} is more than the CLIP model's {p} positions"),
                );
            }
            elements
        }
        Err(err) => {
            f.fail("conditioning.clip_weights", format!("{err:#}"));
            0
        }
    }
}

/// A prompt file: readable UTF-8 text, not empty, every prompt one the conditioning knows.
fn prompt_file(
    f: &mut Problems,
    kind: ConditioningKind,
    key: &str,
    path: &Path,
    tokenizer: &PromptTokenizer,
) {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_PROMPT_FILE => {
            f.fail(
                key,
                format!(
                    "prompt file {} is {} bytes; a prompt file holds at most 1 MiB of prompts",
                    path.display(),
                    m.len()
                ),
            );
            return;
        }
        _ => {}
    }
    let listed = match prompts::read(path, tokenizer.kind()) {
        Ok(listed) => listed,
        Err(err) => {
            f.fail(key, format!("{err:#}"));
            return;
        }
    };
    for w in &listed {
        let known = match (kind, tokenizer.vocabulary()) {
            (ConditioningKind::Class, Some(vocab)) => vocab.label_of(w).map(|_| ()),
            (ConditioningKind::Text | ConditioningKind::Class, _) => {
                tokenizer.encode(w).map(|_| ())
            }
            (ConditioningKind::Clip | ConditioningKind::None, _) => Ok(()),
        };
        if let Err(err) = known {
            f.fail(key, format!("prompt file {}: {err}", path.display()));
            return;
        }
    }
}

/// Refuses the stages whose memory estimate is above what this machine has available.
fn memory_fits(
    f: &mut Problems,
    resolved: &Resolved,
    tasks: &[(String, Task)],
    classes: &[String],
    tokenizer: Option<&PromptTokenizer>,
    clip: usize,
) {
    let Some(available) = memory::available() else {
        return;
    };
    let e = &resolved.experiment;
    let Ok(counts) = crate::data::counts(&e.dataset) else {
        return;
    };
    for (name, task) in tasks {
        let params = super::params::held(e, task, classes, tokenizer, clip);
        let estimate = memory::estimate(e, task, params, &counts);
        if estimate.total() > available {
            let key = match task.train() {
                Some(_) => format!("stages.{name}.batch_size"),
                None => "logging.grid_size".to_string(),
            };
            f.fail(
                &key,
                format!(
                    "stage `{name}` needs {estimate} of memory, but this machine has {} \
                     available; use a smaller batch, grid or networks",
                    memory::gib(available)
                ),
            );
        }
    }
}
