//! The experiment file, as serde types: every key, its default and its meaning.
//!
//! These raw types are what TOML, environment variables and `--set` layer into. They are
//! checked by [`super::validate`] before anything runs; nothing downstream reads raw TOML.
//! `schemas/experiment.schema.json` is generated from these same types.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One experiment: data, networks, noise schedule, conditioning and the stages that train them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// A base experiment file this one layers on top of, relative to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    pub experiment: ExperimentMeta,
    #[serde(default)]
    pub dataset: DatasetConfig,
    #[serde(default)]
    pub autoencoder: AutoencoderConfig,
    #[serde(default)]
    pub unet: UnetConfig,
    #[serde(default)]
    pub schedule: ScheduleConfig,
    #[serde(default)]
    pub conditioning: ConditioningConfig,
    /// The stages, by name. Each names the stages it needs; they run in dependency order.
    pub stages: BTreeMap<String, StageConfig>,
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Keys mapped to lists of values, e.g. `"stages.ldm.lr" = [1e-4, 2e-4]`: the experiment
    /// runs once per combination, each member named `<name>-<values>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sweep: BTreeMap<String, Vec<serde_json::Value>>,
}

/// Identity of the experiment and where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentMeta {
    /// Name of the experiment: runs go to `<runs-dir>/<name>/<timestamp>/`.
    pub name: String,
    /// The one seed every random stream (initialisation, data order, noise, dropout) derives from.
    #[serde(default)]
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:<index>` (CUDA needs a build with `--features cuda`).
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_device() -> String {
    "cpu".into()
}

/// Which data set, and where its files are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// `mnist`, `fashion_mnist` (IDX files) or `image_folder` (PNG files, one folder per class).
    #[serde(default)]
    pub name: DatasetName,
    /// Folder holding the files. Unset: `$LDM_DATA_DIR`, else `data/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Side of the square images the models see (MNIST's 28x28 are resized bilinearly).
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    /// Colour channels of `image_folder` data (1 or 3). MNIST-style data sets have 1.
    #[serde(default = "default_channels")]
    pub channels: usize,
    /// Download missing IDX files from `mirrors` (checksums are always verified).
    #[serde(default = "yes")]
    pub download: bool,
    /// Base URLs tried in order for missing IDX files. Empty: the standard public mirrors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
    /// Use only the first N training images (0: all). For quick experiments and tests.
    #[serde(default)]
    pub train_limit: usize,
}

/// The data sets ldm-run can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DatasetName {
    #[default]
    Mnist,
    FashionMnist,
    ImageFolder,
}

impl DatasetName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion_mnist",
            Self::ImageFolder => "image_folder",
        }
    }
}

fn default_image_size() -> usize {
    32
}
fn default_channels() -> usize {
    1
}
fn yes() -> bool {
    true
}

/// AutoencoderKL sizes. Defaults are the lesson's kl-f4 (1x32x32 -> 4x8x8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Base channel width.
    #[serde(default = "default_ae_ch")]
    pub ch: usize,
    /// Width multiplier per level; each level after the first halves the resolution.
    #[serde(default = "default_ae_mult")]
    pub ch_mult: Vec<usize>,
    /// Residual blocks per encoder level (the decoder has one more).
    #[serde(default = "two")]
    pub num_res_blocks: usize,
    /// Resolutions (image side in pixels) that get a self-attention block.
    #[serde(default = "default_ae_attn")]
    pub attn_resolutions: Vec<usize>,
    /// Channels of the latent z.
    #[serde(default = "four")]
    pub z_channels: usize,
    /// Channels after quant_conv / before post_quant_conv.
    #[serde(default = "four")]
    pub embed_dim: usize,
    /// Dropout inside residual blocks.
    #[serde(default)]
    pub dropout: f64,
    /// GroupNorm groups; every width must be divisible by it.
    #[serde(default = "default_groups")]
    pub norm_groups: usize,
}

fn default_ae_ch() -> usize {
    128
}
fn default_ae_mult() -> Vec<usize> {
    vec![1, 1, 2]
}
fn default_ae_attn() -> Vec<usize> {
    vec![16, 8]
}
fn two() -> usize {
    2
}
fn four() -> usize {
    4
}
fn default_groups() -> usize {
    32
}

impl Default for AutoencoderConfig {
    fn default() -> Self {
        Self {
            ch: default_ae_ch(),
            ch_mult: default_ae_mult(),
            num_res_blocks: 2,
            attn_resolutions: default_ae_attn(),
            z_channels: 4,
            embed_dim: 4,
            dropout: 0.0,
            norm_groups: default_groups(),
        }
    }
}

/// Diffusion UNet sizes. Defaults are the lesson's (128 features, [1,2,2], attention at 4x4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnetConfig {
    /// Base channel width (the time embedding is 4x this).
    #[serde(default = "default_unet_ch")]
    pub model_channels: usize,
    /// Width multiplier per level; each level after the first halves the resolution.
    #[serde(default = "default_unet_mult")]
    pub channel_mult: Vec<usize>,
    /// Residual blocks per down level (the up path has one more).
    #[serde(default = "two")]
    pub num_res_blocks: usize,
    /// Latent resolutions that get a spatial transformer (cross-attention) block.
    #[serde(default = "default_unet_attn")]
    pub attention_resolutions: Vec<usize>,
    /// Attention heads in each transformer block.
    #[serde(default = "one")]
    pub num_heads: usize,
    /// Channels per attention head (the transformer's width is heads x this).
    #[serde(default = "default_head_channels")]
    pub head_channels: usize,
    /// Width of the conditioning context the cross-attention reads.
    #[serde(default = "default_context_dim")]
    pub context_dim: usize,
    /// Dropout in residual blocks and attention outputs.
    #[serde(default = "default_unet_dropout")]
    pub dropout: f64,
    /// GroupNorm groups; every width must be divisible by it.
    #[serde(default = "default_groups")]
    pub norm_groups: usize,
    /// Build the skip Linear of every residual block, even where channels do not change and
    /// it goes unused, as the lesson does (only changes the parameter count).
    #[serde(default)]
    pub lesson_skip_layers: bool,
    /// Side of the latent the UNet sees; must equal the autoencoder's. Unset: taken from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_size: Option<usize>,
    /// Channels of the latent the UNet sees; must equal `autoencoder.embed_dim`. Unset: taken
    /// from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_channels: Option<usize>,
}

fn default_unet_ch() -> usize {
    128
}
fn default_unet_mult() -> Vec<usize> {
    vec![1, 2, 2]
}
fn default_unet_attn() -> Vec<usize> {
    vec![4]
}
fn one() -> usize {
    1
}
fn default_head_channels() -> usize {
    64
}
fn default_context_dim() -> usize {
    768
}
fn default_unet_dropout() -> f64 {
    0.1
}

impl Default for UnetConfig {
    fn default() -> Self {
        Self {
            model_channels: default_unet_ch(),
            channel_mult: default_unet_mult(),
            num_res_blocks: 2,
            attention_resolutions: default_unet_attn(),
            num_heads: 1,
            head_channels: default_head_channels(),
            context_dim: default_context_dim(),
            dropout: default_unet_dropout(),
            norm_groups: default_groups(),
            lesson_skip_layers: false,
            latent_size: None,
            latent_channels: None,
        }
    }
}

/// The forward noising process and what the network predicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Beta schedule: `linear`, `scaled_linear` or `cosine`.
    #[serde(default)]
    pub kind: BetaSchedule,
    /// Number of diffusion steps T.
    #[serde(default = "default_timesteps")]
    pub timesteps: usize,
    /// First beta (linear and scaled_linear).
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    /// Last beta (linear and scaled_linear).
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    /// What the UNet predicts: `epsilon` or `v`.
    #[serde(default)]
    pub prediction: Prediction,
    /// Min-SNR-gamma loss weighting (Hang et al., 2023): each sample's squared error is weighted
    /// by min(SNR_t, gamma) / SNR_t (epsilon) or min(SNR_t, gamma) / (SNR_t + 1) (v), so the
    /// nearly clean timesteps stop dominating the gradient. The paper uses 5. Unset: plain MSE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_snr_gamma: Option<f64>,
    /// Multiplier applied to latents. Unset: 1/std of the first training batch's latents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_factor: Option<f64>,
}

fn default_timesteps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    1e-4
}
fn default_beta_end() -> f64 {
    0.02
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            kind: BetaSchedule::Linear,
            timesteps: default_timesteps(),
            beta_start: default_beta_start(),
            beta_end: default_beta_end(),
            prediction: Prediction::Epsilon,
            min_snr_gamma: None,
            scale_factor: None,
        }
    }
}

/// Beta schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    #[default]
    Linear,
    ScaledLinear,
    Cosine,
}

/// Prediction targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    #[default]
    Epsilon,
    V,
}

/// How samples are conditioned on prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditioningConfig {
    /// `text` (prompts through a text encoder trained with the UNet), `class` (a label
    /// embedding as a one-token context), `clip` (a frozen CLIP text encoder from local files)
    /// or `none` (unconditional).
    #[serde(default)]
    pub kind: ConditioningKind,
    /// Probability of dropping a sample's context during training (classifier-free guidance).
    #[serde(default = "default_context_dropout")]
    pub context_dropout: f64,
    /// Text encoder width; must equal `unet.context_dim`. Unset: `unet.context_dim`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    /// Transformer blocks of the text encoder.
    #[serde(default = "one")]
    pub layers: usize,
    /// Attention heads of the text encoder.
    #[serde(default = "default_text_heads")]
    pub heads: usize,
    /// Longest prompt in tokens (longer prompts are an error); with `clip`, the padded length
    /// of every prompt (Stable Diffusion: 77).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// `clip`: the text tower's weights, safetensors with Hugging Face `CLIPTextModel` names,
    /// relative to the file that sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_weights: Option<PathBuf>,
    /// `clip`: the model's `tokenizer.json`, relative to the file that sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_tokenizer: Option<PathBuf>,
}

fn default_context_dropout() -> f64 {
    0.1
}
fn default_text_heads() -> usize {
    4
}
fn default_max_tokens() -> usize {
    8
}

impl Default for ConditioningConfig {
    fn default() -> Self {
        Self {
            kind: ConditioningKind::Text,
            context_dropout: default_context_dropout(),
            width: None,
            layers: 1,
            heads: default_text_heads(),
            max_tokens: default_max_tokens(),
            clip_weights: None,
            clip_tokenizer: None,
        }
    }
}

/// Conditioning kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConditioningKind {
    #[default]
    Text,
    Class,
    None,
    /// A frozen CLIP text encoder from local files (`clip_weights`, `clip_tokenizer`).
    Clip,
}

/// One stage of the experiment. `kind` decides which of the other keys apply; a key that
/// does not apply to the stage's kind is an error. Training keys apply to `autoencoder`,
/// `diffusion` and `classifier`; sampler keys to `diffusion` (grids during training), `sample`
/// and `eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// What the stage does: `autoencoder`, `diffusion`, `sample`, `classifier` or `eval`.
    pub kind: StageKind,
    /// Names of the stages whose artifacts this one uses.
    #[serde(default)]
    pub needs: Vec<String>,
    /// Training: optimizer steps (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Training: images per step (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Training: peak learning rate of Adam (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Training: Adam betas. Default [0.9, 0.999].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub betas: Option<[f64; 2]>,
    /// Training: decoupled weight decay (AdamW). Default 0 (plain Adam).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    /// Training: clip the global gradient norm to this; 0 disables. Default 1.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_clip: Option<f64>,
    /// Training: linear learning-rate warm-up steps. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<usize>,
    /// Training: learning rate after the warm-up: `constant`, or decaying to zero at the last
    /// step along a `cosine` or a `linear` ramp. Default `constant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr_decay: Option<LrDecay>,
    /// Training: checkpoint every N steps (the last step always is). Default 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<usize>,
    /// Training: newest checkpoints kept. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_checkpoints: Option<usize>,
    /// Autoencoder: weight of the KL term. Default 1e-6 (the paper's kl-f4; the lesson used 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_weight: Option<f64>,
    /// Autoencoder: weight of the patch-discriminator term; 0 disables it. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disc_weight: Option<f64>,
    /// Autoencoder: step at which the discriminator starts. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disc_start: Option<usize>,
    /// Autoencoder: weight of the LPIPS perceptual term, added to every pixel's L1 error as in
    /// the LDM paper; needs `lpips_weights`. 0 disables it. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perceptual_weight: Option<f64>,
    /// Autoencoder: local safetensors file of LPIPS weights (torchvision's VGG16
    /// `features.<i>.weight`/`.bias` and the lpips package's `lin<k>.model.1.weight`), relative to
    /// the file that sets it. Nothing is downloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lpips_weights: Option<PathBuf>,
    /// Autoencoder and eval: test images for the reconstruction PSNR (and SSIM); 0 means all.
    /// Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_images: Option<usize>,
    /// Diffusion and classifier: EMA decay of the weights used for sampling (diffusion) or for
    /// judging (classifier); 0 disables EMA. Default 0.999.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
    /// Sampling: `ddim` or `ddpm` (ancestral, all T steps). Default ddim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<SamplerKind>,
    /// Sampling: DDIM steps. Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler_steps: Option<usize>,
    /// Sampling: DDIM eta; 0 is deterministic. Default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<f64>,
    /// Sampling: classifier-free guidance scale; 1 is the plain conditional model. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<f64>,
    /// Sampling: prompt grid file (8 prompts per line), relative to the experiment file.
    /// Unset: prompts drawn like training prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts_file: Option<PathBuf>,
    /// Eval: samples generated and judged (prompts drawn like training prompts). Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<usize>,
    /// Eval: further guidance scales to measure, each reported apart. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance_sweep: Option<Vec<f64>>,
}

/// Stage kinds, as written in `kind = "..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    Autoencoder,
    Diffusion,
    Sample,
    Classifier,
    Eval,
}

impl StageKind {
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
}

/// Learning rate after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LrDecay {
    #[default]
    Constant,
    Cosine,
    Linear,
}

/// Samplers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    #[default]
    Ddim,
    Ddpm,
}

/// What goes to TensorBoard and the terminal, and how often.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// Scalars every N steps.
    #[serde(default = "default_log_every")]
    pub log_every: usize,
    /// Sample grids every N steps (and always at the end of a stage).
    #[serde(default = "default_sample_every")]
    pub sample_every: usize,
    /// Images per side of a sample grid.
    #[serde(default = "default_grid")]
    pub grid_size: usize,
}

fn default_log_every() -> usize {
    50
}
fn default_sample_every() -> usize {
    1000
}
fn default_grid() -> usize {
    8
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            log_every: default_log_every(),
            sample_every: default_sample_every(),
            grid_size: default_grid(),
        }
    }
}

impl Default for DatasetConfig {
    fn default() -> Self {
        Self {
            name: DatasetName::Mnist,
            root: None,
            image_size: default_image_size(),
            channels: default_channels(),
            download: true,
            mirrors: Vec::new(),
            train_limit: 0,
        }
    }
}
