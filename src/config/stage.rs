//! Stage tables: `kind` decides which groups of keys a stage takes. Each group is one settings
//! type with its defaults and docs (in its domain where it has one: training keys in
//! `train/`, sampler keys in `diffusion/`); the groups that only a stage kind has are here.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::diffusion::noise::TrainingNoise;
use crate::diffusion::samplers::{SamplerSettings, SweepEntry, check_guidance, check_sweep};
use crate::diffusion::schedule::ScheduleConfig;
use crate::settings::Checks;
use crate::train::choice::CheckpointChoice;
use crate::train::{EmaSettings, HeldOutSettings, TrainSettings};

/// Stage kinds, as written in `kind = "..."`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Autoencoder,
    Diffusion,
    Sample,
    Classifier,
    Eval,
}

impl StageKind {
    pub const ALL: [StageKind; 5] = [
        Self::Autoencoder,
        Self::Diffusion,
        Self::Sample,
        Self::Classifier,
        Self::Eval,
    ];

    /// Whether stages of this kind train a network (and take the training keys).
    pub fn trains(self) -> bool {
        matches!(self, Self::Autoencoder | Self::Diffusion | Self::Classifier)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Autoencoder => "autoencoder",
            Self::Diffusion => "diffusion",
            Self::Sample => "sample",
            Self::Classifier => "classifier",
            Self::Eval => "eval",
        }
    }

    /// The schema of this kind's settings: their keys, types, defaults and docs.
    fn schema(self) -> schemars::Schema {
        match self {
            Self::Autoencoder => schemars::schema_for!(AutoencoderStage),
            Self::Diffusion => schemars::schema_for!(DiffusionStage),
            Self::Sample => schemars::schema_for!(SampleStage),
            Self::Classifier => schemars::schema_for!(ClassifierStage),
            Self::Eval => schemars::schema_for!(EvalStage),
        }
    }

    /// The keys a stage of this kind takes besides `kind` and `needs`.
    pub fn keys(self) -> Vec<String> {
        self.schema()
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The keys a stage of this kind must set (those without a default).
    pub fn required(self) -> Vec<String> {
        self.schema()
            .get("required")
            .and_then(|r| r.as_array())
            .map(|r| {
                r.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The autoencoder's loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct AutoencoderLoss {
    /// Weight of the KL term (the paper's kl-f4 uses 1e-6; the lesson used 1.0).
    pub kl_weight: f64,
    /// Weight of the patch-discriminator term; 0 disables it.
    pub disc_weight: f64,
    /// Step at which the discriminator starts.
    pub disc_start: usize,
    /// Weight of the LPIPS perceptual term, added to every pixel's L1 error as in the LDM
    /// paper; needs `lpips_weights`. 0 disables it.
    pub perceptual_weight: f64,
    /// Local safetensors file of LPIPS weights (torchvision's VGG16 `features.<i>.weight`/
    /// `.bias` and the lpips package's `lin<k>.model.1.weight`), relative to the file that sets
    /// it. Nothing is downloaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lpips_weights: Option<PathBuf>,
}

impl Default for AutoencoderLoss {
    fn default() -> Self {
        Self {
            kl_weight: 1e-6,
            disc_weight: 0.0,
            disc_start: 0,
            perceptual_weight: 0.0,
            lpips_weights: None,
        }
    }
}

impl AutoencoderLoss {
    fn check(&self) -> Checks {
        let mut c = Checks::new();
        c.non_negative("kl_weight", self.kl_weight);
        c.non_negative("disc_weight", self.disc_weight);
        c.non_negative("perceptual_weight", self.perceptual_weight);
        if self.perceptual_weight > 0.0 && self.lpips_weights.is_none() {
            c.fail(
                "perceptual_weight",
                "a perceptual term needs LPIPS weights: set lpips_weights to a local \
                 safetensors file (see README), or perceptual_weight = 0",
            );
        }
        c
    }
}

/// Test images measured for the autoencoder's reconstruction PSNR and SSIM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct TestImages {
    /// Test images for the reconstruction PSNR (and SSIM); 0 means all.
    pub eval_images: usize,
}

impl Default for TestImages {
    fn default() -> Self {
        Self { eval_images: 1000 }
    }
}

/// The prompts of a sample grid.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PromptGrid {
    /// Prompt grid file, relative to the file that sets it: whitespace-separated words (e.g. 8
    /// per line) for class prompts, one caption per line for a caption tokenizer. Unset:
    /// prompts drawn like training prompts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompts_file: Option<PathBuf>,
}

/// Which checkpoint of the model it needs a stage loads.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct InputCheckpoint {
    /// Checkpoint of the needed training stage (the autoencoder for a diffusion stage, the
    /// diffusion model for sample and eval stages): `"last"`, `"best"` (kept by its
    /// `keep_best`) or a step number its rotation keeps.
    pub checkpoint: CheckpointChoice,
}

/// Most samples an eval stage generates.
pub const MAX_SAMPLES: usize = 1_000_000;

/// What an eval stage generates and measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct EvalSamples {
    /// Samples generated and judged (prompts drawn like training prompts).
    pub samples: usize,
    /// Further guidance scales to measure, each reported apart.
    pub guidance_sweep: Vec<f64>,
    /// Further samplers to measure at the stage's guidance, with the same prompts and starting
    /// noise, each reported apart with its network evaluations and seconds per 1000 samples:
    /// `[{ sampler = "dpmpp_2m", sampler_steps = 10 }, { sampler = "dpmpp_2m", sampler_steps =
    /// 10, sigmas = "karras" }]`. An entry's `eta`, `spacing` and `sigmas` are their defaults
    /// when left out.
    pub sampler_sweep: Vec<SweepEntry>,
    /// Seed of the prompts and starting noise the stage measures with. Unset: `experiment.seed`.
    /// Another seed measures the run-to-run spread of the sample numbers without retraining.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_seed: Option<u64>,
}

impl Default for EvalSamples {
    fn default() -> Self {
        Self {
            samples: 1000,
            guidance_sweep: Vec::new(),
            sampler_sweep: Vec::new(),
            sample_seed: None,
        }
    }
}

impl EvalSamples {
    fn check(&self, schedule: &ScheduleConfig) -> Checks {
        let mut c = Checks::new();
        if self.samples < 2 {
            c.fail(
                "samples",
                "must be at least 2: the Frechet distance needs the samples' covariance",
            );
        } else {
            c.count_in("samples", self.samples, 2, MAX_SAMPLES);
        }
        for g in &self.guidance_sweep {
            check_guidance(&mut c, "guidance_sweep", *g);
        }
        check_sweep(&mut c, &self.sampler_sweep, schedule);
        c
    }
}

/// Samples a diffusion stage that needs a classifier draws and judges at every held-out
/// measurement, unless `judge_samples` says otherwise.
pub const JUDGE_SAMPLES: usize = 100;

fn is_default_judge_samples(n: &usize) -> bool {
    *n == JUDGE_SAMPLES
}

/// How a diffusion stage that needs a classifier stage judges its samples while it trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct TrainingJudge {
    /// Samples drawn at every held-out measurement (every `eval_every` steps), with the same
    /// prompts and starting noise each time, and judged by the classifier stage among `needs`:
    /// `held_out/accuracy`, `held_out/frechet` and `held_out/kid` against the test split.
    /// Without a classifier among `needs` nothing is drawn.
    #[serde(skip_serializing_if = "is_default_judge_samples")]
    pub judge_samples: usize,
}

impl Default for TrainingJudge {
    fn default() -> Self {
        Self {
            judge_samples: JUDGE_SAMPLES,
        }
    }
}

impl TrainingJudge {
    fn check(&self) -> Checks {
        let mut c = Checks::new();
        // Two at least: the Frechet distance needs the samples' covariance.
        c.count_in("judge_samples", self.judge_samples, 2, MAX_SAMPLES);
        c
    }
}

/// The held-out metrics an autoencoder stage measures: the L1 reconstruction error of the
/// posterior mean, its PSNR and SSIM.
pub const AUTOENCODER_HELD_OUT: &[&str] = &["held_out/loss", "held_out/psnr", "held_out/ssim"];
/// The held-out metric a diffusion stage measures: the mean squared error of its prediction
/// target at fixed timesteps and noise.
pub const DIFFUSION_HELD_OUT: &[&str] = &["held_out/loss"];
/// The held-out metrics a diffusion stage that needs a classifier stage measures besides:
/// its samples' conditional accuracy, Frechet distance and KID.
pub const DIFFUSION_JUDGED: &[&str] = &["held_out/accuracy", "held_out/frechet", "held_out/kid"];

/// `kind = "autoencoder"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AutoencoderStage {
    #[serde(flatten)]
    pub train: TrainSettings,
    #[serde(flatten)]
    pub held_out: HeldOutSettings,
    #[serde(flatten)]
    pub loss: AutoencoderLoss,
    #[serde(flatten)]
    pub test: TestImages,
}

/// `kind = "diffusion"`: the sampler keys set its preview grids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DiffusionStage {
    #[serde(flatten)]
    pub train: TrainSettings,
    #[serde(flatten)]
    pub held_out: HeldOutSettings,
    #[serde(flatten)]
    pub ema: EmaSettings,
    #[serde(flatten)]
    pub noise: TrainingNoise,
    #[serde(flatten)]
    pub judge: TrainingJudge,
    #[serde(flatten)]
    pub sampling: SamplerSettings,
    #[serde(flatten)]
    pub grid: PromptGrid,
    #[serde(flatten)]
    pub input: InputCheckpoint,
}

/// `kind = "sample"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SampleStage {
    #[serde(flatten)]
    pub sampling: SamplerSettings,
    #[serde(flatten)]
    pub grid: PromptGrid,
    #[serde(flatten)]
    pub input: InputCheckpoint,
}

/// `kind = "classifier"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClassifierStage {
    #[serde(flatten)]
    pub train: TrainSettings,
    #[serde(flatten)]
    pub ema: EmaSettings,
}

/// `kind = "eval"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EvalStage {
    #[serde(flatten)]
    pub sampling: SamplerSettings,
    #[serde(flatten)]
    pub measure: EvalSamples,
    #[serde(flatten)]
    pub test: TestImages,
    #[serde(flatten)]
    pub input: InputCheckpoint,
}

/// A stage's settings, typed by its kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StageSpec {
    Autoencoder(AutoencoderStage),
    Diffusion(DiffusionStage),
    Sample(SampleStage),
    Classifier(ClassifierStage),
    Eval(EvalStage),
}

impl StageSpec {
    pub fn kind(&self) -> StageKind {
        match self {
            Self::Autoencoder(_) => StageKind::Autoencoder,
            Self::Diffusion(_) => StageKind::Diffusion,
            Self::Sample(_) => StageKind::Sample,
            Self::Classifier(_) => StageKind::Classifier,
            Self::Eval(_) => StageKind::Eval,
        }
    }

    pub fn train(&self) -> Option<&TrainSettings> {
        match self {
            Self::Autoencoder(s) => Some(&s.train),
            Self::Diffusion(s) => Some(&s.train),
            Self::Classifier(s) => Some(&s.train),
            Self::Sample(_) | Self::Eval(_) => None,
        }
    }

    pub fn sampling(&self) -> Option<&SamplerSettings> {
        match self {
            Self::Diffusion(s) => Some(&s.sampling),
            Self::Sample(s) => Some(&s.sampling),
            Self::Eval(s) => Some(&s.sampling),
            Self::Autoencoder(_) | Self::Classifier(_) => None,
        }
    }

    /// The prompt grid file a stage reads, if any.
    pub fn prompts_file(&self) -> Option<&PathBuf> {
        match self {
            Self::Diffusion(s) => s.grid.prompts_file.as_ref(),
            Self::Sample(s) => s.grid.prompts_file.as_ref(),
            _ => None,
        }
    }

    /// The checkpoint of its needed model a stage loads (`None`: it loads none by choice).
    pub fn input(&self) -> Option<CheckpointChoice> {
        match self {
            Self::Diffusion(s) => Some(s.input.checkpoint),
            Self::Sample(s) => Some(s.input.checkpoint),
            Self::Eval(s) => Some(s.input.checkpoint),
            Self::Autoencoder(_) | Self::Classifier(_) => None,
        }
    }

    /// The held-out settings of a training stage that has them.
    pub fn held_out(&self) -> Option<&HeldOutSettings> {
        match self {
            Self::Autoencoder(s) => Some(&s.held_out),
            Self::Diffusion(s) => Some(&s.held_out),
            _ => None,
        }
    }

    /// Training steps (0 for stages that do not train).
    pub fn steps(&self) -> u64 {
        self.train().map_or(0, |t| t.steps as u64)
    }

    /// The checks of every group: of its own values, and of the sampler keys against the
    /// `schedule` they sample (its timesteps bound the steps, zero terminal SNR rules out
    /// Karras sigmas).
    pub fn check(&self, schedule: &ScheduleConfig) -> Vec<crate::settings::Invalid> {
        let mut out = Vec::new();
        if let Some(t) = self.train() {
            out.extend(t.check().into_vec());
        }
        if let Some(s) = self.sampling() {
            out.extend(s.check(schedule).into_vec());
        }
        match self {
            Self::Autoencoder(s) => {
                out.extend(s.loss.check().into_vec());
                out.extend(s.held_out.check(AUTOENCODER_HELD_OUT).into_vec());
            }
            Self::Diffusion(s) => {
                out.extend(s.ema.check().into_vec());
                out.extend(s.noise.check().into_vec());
                out.extend(s.judge.check().into_vec());
                let measured: Vec<&str> = DIFFUSION_HELD_OUT
                    .iter()
                    .chain(DIFFUSION_JUDGED)
                    .copied()
                    .collect();
                out.extend(s.held_out.check(&measured).into_vec());
            }
            Self::Classifier(s) => out.extend(s.ema.check().into_vec()),
            Self::Eval(s) => out.extend(s.measure.check(schedule).into_vec()),
            Self::Sample(_) => {}
        }
        out
    }
}

/// One stage, typed: the stages it needs and its settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    #[serde(flatten)]
    pub spec: StageSpec,
    pub needs: Vec<String>,
}
