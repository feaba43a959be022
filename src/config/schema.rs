//! The experiment file and the resolved experiment.
//!
//! [`ExperimentFile`] is what TOML, environment variables and `--set` layer into: its sections
//! are the domains' own settings types (each with its defaults, docs and checks), its stage
//! tables stay raw until their `kind` says which settings groups they hold. [`Experiment`] is
//! the resolved, typed form every later step reads; `config.toml` of a run is it as TOML.
//! `schemas/experiment.schema.json` is generated from these types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::stage::{
    AutoencoderStage, ClassifierStage, DiffusionStage, EvalStage, SampleStage, Stage, StageKind,
};
use crate::conditioning::{ConditioningConfig, ConditioningKind};
use crate::data::DatasetConfig;
use crate::device::DeviceSpec;
use crate::diffusion::schedule::ScheduleConfig;
use crate::log::LoggingConfig;
use crate::models::autoencoder::{AutoencoderConfig, LatentShape};
use crate::models::unet::{UnetConfig, UnetShape};

/// One experiment file: data, networks, noise schedule, conditioning and the stages that train
/// them.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    /// A base experiment file this one layers on top of, relative to this file.
    #[serde(default)]
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
    /// The stages, by name (letters, digits, '-' and '_'). Each names the stages it needs;
    /// they run in dependency order.
    pub stages: BTreeMap<String, StageTable>,
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Keys mapped to lists of values, e.g. `"stages.ldm.lr" = [1e-4, 2e-4]`: the experiment
    /// runs once per combination, each member named `<name>-<values>`.
    #[serde(default)]
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
    #[serde(default)]
    pub device: DeviceSpec,
}

/// A stage table as written: `kind`, `needs` and the keys of its kind, read once the kind is
/// known (see [`super::stage`]).
#[derive(Debug, Clone, Deserialize)]
pub struct StageTable(pub serde_json::Map<String, serde_json::Value>);

impl JsonSchema for StageTable {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Stage".into()
    }

    /// One object schema per kind: `kind` fixed, `needs`, and the kind's settings groups.
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let needs = serde_json::json!({
            "description": "Names of the stages whose artifacts this one uses.",
            "type": "array",
            "items": { "type": "string" },
            "default": []
        });
        let kinds: Vec<serde_json::Value> = StageKind::ALL
            .iter()
            .map(|kind| {
                let mut schema = match kind {
                    StageKind::Autoencoder => AutoencoderStage::json_schema(generator),
                    StageKind::Diffusion => DiffusionStage::json_schema(generator),
                    StageKind::Sample => SampleStage::json_schema(generator),
                    StageKind::Classifier => ClassifierStage::json_schema(generator),
                    StageKind::Eval => EvalStage::json_schema(generator),
                }
                .to_value();
                schema["title"] = format!("`{}` stage", kind.as_str()).into();
                schema["additionalProperties"] = false.into();
                if let Some(props) = schema["properties"].as_object_mut() {
                    props.insert("kind".into(), serde_json::json!({ "const": kind.as_str() }));
                    props.insert("needs".into(), needs.clone());
                }
                match schema["required"].as_array_mut() {
                    Some(required) => required.insert(0, "kind".into()),
                    None => schema["required"] = serde_json::json!(["kind"]),
                }
                schema
            })
            .collect();
        schemars::json_schema!({
            "description": "One stage: `kind` (autoencoder, diffusion, sample, classifier, eval) decides which other keys apply.",
            "oneOf": kinds
        })
    }
}

/// An experiment whose every value is known and checked: what a run uses, defaults included.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Experiment {
    pub experiment: ExperimentMeta,
    pub dataset: DatasetConfig,
    pub autoencoder: AutoencoderConfig,
    pub unet: UnetConfig,
    pub schedule: ScheduleConfig,
    pub conditioning: ConditioningConfig,
    pub stages: BTreeMap<String, Stage>,
    pub logging: LoggingConfig,
}

impl Experiment {
    /// Channels and side of the autoencoder's latent.
    pub fn latent(&self) -> LatentShape {
        self.autoencoder.latent_shape(self.dataset.image_size)
    }

    /// What the UNet is built for beyond its own `[unet]` sizes.
    pub fn unet_shape(&self) -> UnetShape {
        let latent = self.latent();
        UnetShape {
            latent_channels: latent.channels,
            latent_size: latent.side,
            context_dim: (self.conditioning.kind != ConditioningKind::None)
                .then_some(self.unet.context_dim),
        }
    }
}
