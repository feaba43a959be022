//! Experiment configuration: raw schema, layering, validation, and the resolved plan.

pub mod diff;
pub mod error;
pub mod load;
pub mod overrides;
pub mod schema;
pub mod stage;
pub mod sweep;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::{ConfigError, Problem};
pub use schema::{Experiment, LrDecay};
pub use stage::{SamplerSpec, StageSpec, TrainSpec};

use crate::plan::graph;
use schema::ConditioningKind;

/// One stage, checked and typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: String,
    pub needs: Vec<String>,
    pub spec: StageSpec,
}

/// An experiment whose every value is known and checked, with its stages in execution order.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The experiment file it was read from.
    pub path: PathBuf,
    /// Every key with its value, defaults included; `config.toml` of a run holds exactly this.
    pub experiment: Experiment,
    /// Stages in execution order.
    pub stages: Vec<Stage>,
}

impl Resolved {
    /// The resolved configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.experiment)
            .unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// Reads, layers and checks the experiment at `path` under the process environment.
pub fn resolve(path: &Path, sets: &[String]) -> Result<Resolved, ConfigError> {
    resolve_with_env(path, std::env::vars(), sets)
}

/// [`resolve_members`] under the process environment.
pub fn members(path: &Path, sets: &[String]) -> Result<Vec<Resolved>, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    resolve_members(path, env, sets)
}

/// [`resolve`] with an explicit environment (tests pass their own). A `[sweep]` is kept as
/// written; [`resolve_members`] expands it.
pub fn resolve_with_env(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<Resolved, ConfigError> {
    resolve_layers(path, &[], env, sets)
}

/// The experiments a file stands for: itself, or one per member of its `[sweep]`.
pub fn resolve_members(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)> + Clone,
    sets: &[String],
) -> Result<Vec<Resolved>, ConfigError> {
    let base = resolve_layers(path, &[], env.clone(), sets)?;
    if base.experiment.sweep.is_empty() {
        return Ok(vec![base]);
    }
    let mut out = Vec::new();
    for member in sweep::members(&base.experiment.sweep)? {
        let mut r = resolve_layers(path, &member.overrides, env.clone(), sets)?;
        r.experiment.sweep.clear();
        r.experiment.experiment.name =
            format!("{}-{}", r.experiment.experiment.name, member.suffix);
        out.push(r);
    }
    Ok(out)
}

fn resolve_layers(
    path: &Path,
    member: &[overrides::KeyOverride],
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<Resolved, ConfigError> {
    let layered = load::layer(path, member, env, sets)?;
    let source = |key: &str| layered.source_of(key);
    let base_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();

    let mut problems: Vec<Problem> = Vec::new();
    let mut experiment = layered.experiment.clone();
    experiment.extends = None;
    for (name, stage) in experiment.stages.iter_mut() {
        problems.extend(stage::foreign_keys(name, stage, source));
        stage::fill_defaults(stage);
        for (key, what, path) in [
            ("prompts_file", "prompt file", &mut stage.prompts_file),
            (
                "lpips_weights",
                "LPIPS weights file",
                &mut stage.lpips_weights,
            ),
        ] {
            let key = format!("stages.{name}.{key}");
            problems.extend(resolve_file(&layered, &key, what, path));
        }
    }
    let cond = &mut experiment.conditioning;
    for (key, what, path) in [
        ("clip_weights", "CLIP weights file", &mut cond.clip_weights),
        (
            "clip_tokenizer",
            "CLIP tokenizer file",
            &mut cond.clip_tokenizer,
        ),
    ] {
        let key = format!("conditioning.{key}");
        problems.extend(resolve_file(&layered, &key, what, path));
    }
    if let (ConditioningKind::Clip, Some(weights)) = (cond.kind, &cond.clip_weights)
        && let Some(width) = clip_width(weights)
        && width != experiment.unet.context_dim
    {
        problems.push(Problem {
            source: source("unet.context_dim"),
            key: "unet.context_dim".into(),
            message: format!(
                "{} does not match the CLIP text encoder in {}, which is {width} wide; set \
                 unet.context_dim = {width}",
                experiment.unet.context_dim,
                weights.display()
            ),
        });
    }
    problems.extend(validate::check(&layered));

    let mut specs = BTreeMap::new();
    for (name, stage) in &experiment.stages {
        match stage::spec_of(name, stage, &base_dir, source) {
            Ok(spec) => {
                specs.insert(name.clone(), spec);
            }
            Err(p) => problems.extend(p),
        }
    }
    let kinds: BTreeMap<String, _> = experiment
        .stages
        .iter()
        .map(|(n, s)| (n.clone(), (s.kind, s.needs.clone())))
        .collect();
    let order = match graph::order(&kinds) {
        Ok(order) => order,
        Err(errors) => {
            problems.extend(errors.into_iter().map(|e| Problem {
                source: source(&format!("stages.{}.needs", e.stage)),
                key: format!("stages.{}.needs", e.stage),
                message: e.message,
            }));
            Vec::new()
        }
    };
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    let stages = order
        .into_iter()
        .map(|name| Stage {
            needs: experiment.stages[&name].needs.clone(),
            spec: specs.remove(&name).expect("every ordered stage has a spec"),
            name,
        })
        .collect();
    Ok(Resolved {
        path: path.to_path_buf(),
        experiment,
        stages,
    })
}

/// The JSON Schema of experiment files, as committed in `schemas/experiment.schema.json`.
/// The width of the CLIP text encoder in `weights` (read from the file's header), if readable.
fn clip_width(weights: &Path) -> Option<usize> {
    // SAFETY: the file is only read, and only for its header, while nothing else writes it.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(weights) }.ok()?;
    let view = st
        .get("text_model.embeddings.token_embedding.weight")
        .ok()?;
    view.shape().get(1).copied()
}

/// Makes the file `path` set at `key` absolute (relative to the file that set it); a missing
/// file is a problem.
fn resolve_file(
    layered: &load::Layered,
    key: &str,
    what: &str,
    path: &mut Option<PathBuf>,
) -> Option<Problem> {
    let full = layered.base_dir_of(key).join(path.as_ref()?);
    if full.is_file() {
        *path = Some(full.canonicalize().unwrap_or(full));
        return None;
    }
    Some(Problem {
        source: layered.source_of(key),
        key: key.to_string(),
        message: format!(
            "{what} {} does not exist (paths are relative to the file that sets them)",
            full.display()
        ),
    })
}

pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Experiment);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
