//! What each stage does, with its typed settings and the stages it takes its inputs from, by
//! role: a diffusion stage gets its autoencoder stage, an eval stage its diffusion and
//! classifier stages. Worked out once from the checked stage graph; nothing later looks at
//! `needs` or a stage's kind again.

use std::collections::BTreeMap;

use crate::config::Stage;
use crate::config::stage::{
    AutoencoderStage, ClassifierStage, DiffusionStage, EvalStage, SampleStage, StageKind, StageSpec,
};
use crate::train::TrainSettings;
use crate::train::choice::CheckpointChoice;

/// A diffusion model to sample from: its diffusion stage and that stage's autoencoder.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelRef {
    pub diffusion: String,
    pub autoencoder: String,
}

/// A stage's work: its settings and its inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    Autoencoder(AutoencoderStage),
    Diffusion {
        spec: DiffusionStage,
        autoencoder: String,
        /// The classifier stage that judges samples while it trains, if it needs one.
        judge: Option<String>,
    },
    Sample {
        spec: SampleStage,
        model: ModelRef,
    },
    Classifier(ClassifierStage),
    Eval {
        spec: EvalStage,
        model: ModelRef,
        classifier: String,
    },
}

impl Task {
    pub fn kind(&self) -> StageKind {
        match self {
            Self::Autoencoder(_) => StageKind::Autoencoder,
            Self::Diffusion { .. } => StageKind::Diffusion,
            Self::Sample { .. } => StageKind::Sample,
            Self::Classifier(_) => StageKind::Classifier,
            Self::Eval { .. } => StageKind::Eval,
        }
    }

    /// The training stage whose checkpoint this stage loads by its `checkpoint` key, and that
    /// choice.
    pub fn input(&self) -> Option<(&str, CheckpointChoice)> {
        match self {
            Self::Diffusion {
                spec, autoencoder, ..
            } => Some((autoencoder, spec.input.checkpoint)),
            Self::Sample { spec, model } => Some((&model.diffusion, spec.input.checkpoint)),
            Self::Eval { spec, model, .. } => Some((&model.diffusion, spec.input.checkpoint)),
            Self::Autoencoder(_) | Self::Classifier(_) => None,
        }
    }

    /// The training settings of a stage that trains.
    pub fn train(&self) -> Option<&TrainSettings> {
        match self {
            Self::Autoencoder(s) => Some(&s.train),
            Self::Diffusion { spec, .. } => Some(&spec.train),
            Self::Classifier(s) => Some(&s.train),
            Self::Sample { .. } | Self::Eval { .. } => None,
        }
    }

    /// The stage that trains the autoencoder this task uses, if any.
    pub fn autoencoder(&self) -> Option<&str> {
        match self {
            Self::Diffusion { autoencoder, .. } => Some(autoencoder),
            Self::Sample { model, .. } | Self::Eval { model, .. } => Some(&model.autoencoder),
            Self::Autoencoder(_) | Self::Classifier(_) => None,
        }
    }
}

/// The stage of `kind` among `needs` (the graph check guarantees there is exactly one).
fn needed(needs: &[String], stages: &BTreeMap<String, Stage>, kind: StageKind) -> Option<String> {
    needs
        .iter()
        .find(|n| stages.get(*n).is_some_and(|s| s.spec.kind() == kind))
        .cloned()
}

/// The model a sample or eval stage reads: the diffusion stage among its needs and that
/// stage's autoencoder.
fn model(needs: &[String], stages: &BTreeMap<String, Stage>) -> Option<ModelRef> {
    let diffusion = needed(needs, stages, StageKind::Diffusion)?;
    let autoencoder = needed(
        &stages.get(&diffusion)?.needs,
        stages,
        StageKind::Autoencoder,
    )?;
    Some(ModelRef {
        diffusion,
        autoencoder,
    })
}

/// The task of stage `name` of a checked graph (`None` only if the graph check was skipped).
pub fn of(name: &str, stages: &BTreeMap<String, Stage>) -> Option<Task> {
    let stage = stages.get(name)?;
    let needs = &stage.needs;
    Some(match &stage.spec {
        StageSpec::Autoencoder(s) => Task::Autoencoder(s.clone()),
        StageSpec::Classifier(s) => Task::Classifier(s.clone()),
        StageSpec::Diffusion(s) => Task::Diffusion {
            spec: s.clone(),
            autoencoder: needed(needs, stages, StageKind::Autoencoder)?,
            judge: needed(needs, stages, StageKind::Classifier),
        },
        StageSpec::Sample(s) => Task::Sample {
            spec: s.clone(),
            model: model(needs, stages)?,
        },
        StageSpec::Eval(s) => Task::Eval {
            spec: s.clone(),
            model: model(needs, stages)?,
            classifier: needed(needs, stages, StageKind::Classifier)?,
        },
    })
}
