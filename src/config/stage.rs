//! Stage settings by kind: which keys apply, their defaults, and the typed form stages run on.

use std::path::PathBuf;

use super::error::{Problem, closest};
use super::schema::{LrDecay, SamplerKind, StageConfig, StageKind};

const COMMON_KEYS: &[&str] = &["kind", "needs"];
const TRAIN_KEYS: &[&str] = &[
    "steps",
    "batch_size",
    "lr",
    "betas",
    "weight_decay",
    "grad_clip",
    "warmup_steps",
    "lr_decay",
    "checkpoint_every",
    "keep_checkpoints",
];
const AUTOENCODER_KEYS: &[&str] = &[
    "kl_weight",
    "disc_weight",
    "disc_start",
    "perceptual_weight",
    "lpips_weights",
    "eval_images",
];
const EMA_KEYS: &[&str] = &["ema_decay"];
const SAMPLER_KEYS: &[&str] = &[
    "sampler",
    "sampler_steps",
    "eta",
    "guidance",
    "prompts_file",
];
const EVAL_KEYS: &[&str] = &[
    "sampler",
    "sampler_steps",
    "eta",
    "guidance",
    "samples",
    "guidance_sweep",
    "eval_images",
];

/// The keys a stage of this kind accepts.
pub fn keys_of(kind: StageKind) -> Vec<&'static str> {
    let groups: &[&[&str]] = match kind {
        StageKind::Autoencoder => &[COMMON_KEYS, TRAIN_KEYS, AUTOENCODER_KEYS],
        StageKind::Diffusion => &[COMMON_KEYS, TRAIN_KEYS, EMA_KEYS, SAMPLER_KEYS],
        StageKind::Sample => &[COMMON_KEYS, SAMPLER_KEYS],
        StageKind::Classifier => &[COMMON_KEYS, TRAIN_KEYS, EMA_KEYS],
        StageKind::Eval => &[COMMON_KEYS, EVAL_KEYS],
    };
    groups.iter().flat_map(|g| g.iter().copied()).collect()
}

/// Optimisation settings of a training stage.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSpec {
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub betas: [f64; 2],
    pub weight_decay: f64,
    pub grad_clip: f64,
    pub warmup_steps: usize,
    pub lr_decay: LrDecay,
    pub checkpoint_every: usize,
    pub keep_checkpoints: usize,
}

/// Sampler settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerSpec {
    pub sampler: SamplerKind,
    pub steps: usize,
    pub eta: f64,
    pub guidance: f64,
    /// Absolute path of the prompt grid, if one is given.
    pub prompts_file: Option<PathBuf>,
}

/// A stage's settings, checked and typed.
#[derive(Debug, Clone, PartialEq)]
pub enum StageSpec {
    Autoencoder {
        train: TrainSpec,
        kl_weight: f64,
        disc_weight: f64,
        disc_start: usize,
        perceptual_weight: f64,
        /// Absolute path of the LPIPS weights, if given.
        lpips_weights: Option<PathBuf>,
        eval_images: usize,
    },
    Diffusion {
        train: TrainSpec,
        ema_decay: f64,
        sampling: SamplerSpec,
    },
    Sample {
        sampling: SamplerSpec,
    },
    Classifier {
        train: TrainSpec,
        ema_decay: f64,
    },
    Eval {
        sampling: SamplerSpec,
        samples: usize,
        guidance_sweep: Vec<f64>,
        eval_images: usize,
    },
}

impl StageSpec {
    pub fn kind(&self) -> StageKind {
        match self {
            Self::Autoencoder { .. } => StageKind::Autoencoder,
            Self::Diffusion { .. } => StageKind::Diffusion,
            Self::Sample { .. } => StageKind::Sample,
            Self::Classifier { .. } => StageKind::Classifier,
            Self::Eval { .. } => StageKind::Eval,
        }
    }

    pub fn train(&self) -> Option<&TrainSpec> {
        match self {
            Self::Autoencoder { train, .. }
            | Self::Diffusion { train, .. }
            | Self::Classifier { train, .. } => Some(train),
            Self::Sample { .. } | Self::Eval { .. } => None,
        }
    }
}

/// Keys of `stage` that its kind does not accept, as problems with the closest valid key.
pub fn foreign_keys(
    name: &str,
    stage: &StageConfig,
    source: impl Fn(&str) -> String,
) -> Vec<Problem> {
    let valid = keys_of(stage.kind);
    let set = match serde_json::to_value(stage) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Vec::new(),
    };
    set.keys()
        .filter(|k| !valid.contains(&k.as_str()))
        .map(|k| {
            let key = format!("stages.{name}.{k}");
            let hint = closest(k, &valid)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            Problem {
                source: source(&key),
                message: format!(
                    "not a setting of a `{}` stage (its keys: {}){hint}",
                    stage.kind.as_str(),
                    valid.join(", ")
                ),
                key,
            }
        })
        .collect()
}

/// Fills every unset key that applies to the stage's kind with its default, so the resolved
/// configuration shows every value a run uses. Required keys stay unset (reported later).
pub fn fill_defaults(stage: &mut StageConfig) {
    let trains = stage.kind.trains();
    let samples = matches!(
        stage.kind,
        StageKind::Diffusion | StageKind::Sample | StageKind::Eval
    );
    if trains {
        stage.betas.get_or_insert([0.9, 0.999]);
        stage.weight_decay.get_or_insert(0.0);
        stage.grad_clip.get_or_insert(1.0);
        stage.warmup_steps.get_or_insert(0);
        stage.lr_decay.get_or_insert(LrDecay::Constant);
        stage.checkpoint_every.get_or_insert(500);
        stage.keep_checkpoints.get_or_insert(2);
    }
    if stage.kind == StageKind::Autoencoder {
        stage.kl_weight.get_or_insert(1e-6);
        stage.disc_weight.get_or_insert(0.0);
        stage.disc_start.get_or_insert(0);
        stage.perceptual_weight.get_or_insert(0.0);
        stage.eval_images.get_or_insert(1000);
    }
    if matches!(stage.kind, StageKind::Diffusion | StageKind::Classifier) {
        stage.ema_decay.get_or_insert(0.999);
    }
    if stage.kind == StageKind::Eval {
        stage.samples.get_or_insert(1000);
        stage.guidance_sweep.get_or_insert_with(Vec::new);
        stage.eval_images.get_or_insert(1000);
    }
    if samples {
        stage.sampler.get_or_insert(SamplerKind::Ddim);
        stage.sampler_steps.get_or_insert(50);
        stage.eta.get_or_insert(0.0);
        stage.guidance.get_or_insert(3.0);
    }
}

/// The typed settings of a stage whose defaults are filled; a missing required key is a problem.
/// `base_dir` is the experiment file's folder, against which `prompts_file` is resolved.
pub fn spec_of(
    name: &str,
    stage: &StageConfig,
    base_dir: &std::path::Path,
    source: impl Fn(&str) -> String,
) -> Result<StageSpec, Vec<Problem>> {
    let trains = stage.kind.trains();
    let required = [
        ("steps", stage.steps.is_some()),
        ("batch_size", stage.batch_size.is_some()),
        ("lr", stage.lr.is_some()),
    ];
    let problems: Vec<Problem> = required
        .iter()
        .filter(|(_, set)| trains && !set)
        .map(|(key, _)| Problem {
            source: source(&format!("stages.{name}")),
            key: format!("stages.{name}.{key}"),
            message: format!(
                "missing: a stage of kind `{}` needs it",
                stage.kind.as_str()
            ),
        })
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    let train = trains.then(|| TrainSpec {
        steps: stage.steps.unwrap_or_default(),
        batch_size: stage.batch_size.unwrap_or_default(),
        lr: stage.lr.unwrap_or_default(),
        betas: stage.betas.unwrap_or_default(),
        weight_decay: stage.weight_decay.unwrap_or_default(),
        grad_clip: stage.grad_clip.unwrap_or_default(),
        warmup_steps: stage.warmup_steps.unwrap_or_default(),
        lr_decay: stage.lr_decay.unwrap_or_default(),
        checkpoint_every: stage.checkpoint_every.unwrap_or_default(),
        keep_checkpoints: stage.keep_checkpoints.unwrap_or_default(),
    });
    let sampling = || SamplerSpec {
        sampler: stage.sampler.unwrap_or_default(),
        steps: stage.sampler_steps.unwrap_or_default(),
        eta: stage.eta.unwrap_or_default(),
        guidance: stage.guidance.unwrap_or_default(),
        prompts_file: stage.prompts_file.as_ref().map(|p| base_dir.join(p)),
    };
    Ok(match (stage.kind, train) {
        (StageKind::Autoencoder, Some(train)) => StageSpec::Autoencoder {
            train,
            kl_weight: stage.kl_weight.unwrap_or_default(),
            disc_weight: stage.disc_weight.unwrap_or_default(),
            disc_start: stage.disc_start.unwrap_or_default(),
            perceptual_weight: stage.perceptual_weight.unwrap_or_default(),
            lpips_weights: stage.lpips_weights.as_ref().map(|p| base_dir.join(p)),
            eval_images: stage.eval_images.unwrap_or_default(),
        },
        (StageKind::Diffusion, Some(train)) => StageSpec::Diffusion {
            train,
            ema_decay: stage.ema_decay.unwrap_or_default(),
            sampling: sampling(),
        },
        (StageKind::Classifier, Some(train)) => StageSpec::Classifier {
            train,
            ema_decay: stage.ema_decay.unwrap_or_default(),
        },
        (StageKind::Eval, _) => StageSpec::Eval {
            sampling: sampling(),
            samples: stage.samples.unwrap_or_default(),
            guidance_sweep: stage.guidance_sweep.clone().unwrap_or_default(),
            eval_images: stage.eval_images.unwrap_or_default(),
        },
        _ => StageSpec::Sample {
            sampling: sampling(),
        },
    })
}
