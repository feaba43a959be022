//! Experiment configuration: the file's types, layering, stage tables, validation, sweeps.
//!
//! [`resolve`] turns an experiment file (with its `extends`, the environment's `LDM_...`
//! overrides and `--set` arguments) into a [`Resolved`] experiment whose every value is known
//! and checked, or into every problem found at once. The plan (`crate::plan`) takes it from
//! there; nothing after this reads raw TOML.

pub mod diff;
pub mod error;
pub mod load;
pub mod overrides;
pub mod read_stage;
pub mod schema;
pub mod stage;
pub mod sweep;
pub mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::{ConfigError, Problem};
pub use schema::{Experiment, ExperimentFile};
pub use stage::{Stage, StageKind, StageSpec};

use crate::environment::Environment;

/// An experiment whose every value is known and checked.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The experiment file it was read from.
    pub path: PathBuf,
    /// Every key with its value, defaults included; `config.toml` of a run holds exactly this.
    pub experiment: Experiment,
    /// The layers the values came from, to name the source of a key in later messages.
    pub layered: load::Layered,
    /// For a sweep member, its swept values (`stages.ldm.lr = 0.0001, ...`).
    pub member: Option<String>,
}

impl Resolved {
    /// The resolved configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.experiment)
            .unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

    /// The resolved configuration as JSON, as the manifest records it.
    pub fn experiment_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.experiment).unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        &self.experiment.experiment.name
    }

    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.experiment.stages.get(name)
    }

    /// Where the value at a dotted key came from, e.g. "file experiments/x.toml".
    pub fn source_of(&self, key: &str) -> String {
        self.layered.source_of(key)
    }
}

/// Reads, layers and checks the experiment at `path`. A `[sweep]` is ignored here;
/// [`members`] expands it.
pub fn resolve(path: &Path, env: &Environment, sets: &[String]) -> Result<Resolved, ConfigError> {
    resolve_layers(path, &[], env, sets)
}

/// The shipped smoke experiment with `sets` (`key=value`), for unit tests.
#[cfg(test)]
pub fn smoke(sets: &[&str]) -> Resolved {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/smoke.toml");
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    resolve(&path, &Default::default(), &sets).expect("the smoke experiment resolves")
}

/// The experiments a file stands for: itself, or one per member of its `[sweep]`, each
/// checked; members' names must differ.
pub fn members(
    path: &Path,
    env: &Environment,
    sets: &[String],
) -> Result<Vec<Resolved>, ConfigError> {
    let base = resolve_layers(path, &[], env, sets)?;
    let sweep = &base.layered.file.sweep;
    if sweep.is_empty() {
        return Ok(vec![base]);
    }
    let mut out: Vec<Resolved> = Vec::new();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for member in sweep::members(sweep, &base.source_of("sweep"))? {
        match resolve_layers(path, &member.overrides, env, sets) {
            Ok(mut r) => {
                r.experiment.experiment.name = format!("{}-{}", r.name(), member.suffix);
                r.member = Some(member.describe());
                if let Some(twin) = seen.insert(r.name().to_string(), member.describe()) {
                    problems.push(Problem {
                        source: base.source_of("sweep"),
                        key: "sweep".into(),
                        message: format!(
                            "two members are both named `{}` ({twin} and {}), so their runs and \
                             --member cannot tell them apart; make the swept values differ",
                            r.name(),
                            member.describe()
                        ),
                    });
                }
                out.push(r);
            }
            Err(ConfigError::Invalid(p)) => problems.extend(p.into_iter().map(|mut p| {
                p.message = format!("{} (in sweep member {})", p.message, member.describe());
                p
            })),
            Err(other) => return Err(other),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

fn resolve_layers(
    path: &Path,
    member: &[overrides::KeyOverride],
    env: &Environment,
    sets: &[String],
) -> Result<Resolved, ConfigError> {
    let layered = load::layer(path, member, env.overrides.iter().cloned(), sets)?;
    let mut problems: Vec<Problem> = Vec::new();
    let mut stages = BTreeMap::new();
    for name in layered.file.stages.keys() {
        match read_stage::read(&layered, name) {
            Ok(stage) => {
                stages.insert(name.clone(), stage);
            }
            Err(p) => problems.extend(p),
        }
    }
    let file = &layered.file;
    let mut experiment = Experiment {
        experiment: file.experiment.clone(),
        dataset: file.dataset.clone(),
        autoencoder: file.autoencoder.clone(),
        unet: file.unet.clone(),
        schedule: file.schedule.clone(),
        conditioning: file.conditioning.clone(),
        stages,
        logging: file.logging.clone(),
    };
    if experiment.stages.is_empty() && problems.is_empty() {
        problems.push(Problem {
            source: layered.source_of("stages"),
            key: "stages".into(),
            message: "no stages: add at least one [stages.<name>] table".into(),
        });
    }
    problems.extend(resolve_paths(&mut experiment, &layered));
    problems.extend(validate::check(&experiment, &layered));
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    Ok(Resolved {
        path: path.to_path_buf(),
        experiment,
        layered,
        member: None,
    })
}

/// Makes every file path the configuration names absolute (relative to the file that set it);
/// a missing file is a problem. Folders (`dataset.root`) are taken as given.
fn resolve_paths(e: &mut Experiment, layered: &load::Layered) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut file = |key: String, what: &str, path: &mut Option<PathBuf>| {
        problems.extend(resolve_file(layered, &key, what, path));
    };
    for (name, stage) in e.stages.iter_mut() {
        let key = |k: &str| format!("stages.{name}.{k}");
        match &mut stage.spec {
            StageSpec::Diffusion(s) => {
                file(key("prompts_file"), "prompt file", &mut s.grid.prompts_file)
            }
            StageSpec::Sample(s) => {
                file(key("prompts_file"), "prompt file", &mut s.grid.prompts_file)
            }
            StageSpec::Autoencoder(s) => file(
                key("lpips_weights"),
                "LPIPS weights file",
                &mut s.loss.lpips_weights,
            ),
            StageSpec::Classifier(_) | StageSpec::Eval(_) => {}
        }
    }
    let cond = &mut e.conditioning;
    file(
        "conditioning.clip_weights".into(),
        "CLIP weights file",
        &mut cond.clip_weights,
    );
    file(
        "conditioning.clip_tokenizer".into(),
        "CLIP tokenizer file",
        &mut cond.clip_tokenizer,
    );
    problems
}

/// Makes the file `path` set at `key` absolute (relative to the file that set it); a missing
/// file, or something that is not a regular file, is a problem.
fn resolve_file(
    layered: &load::Layered,
    key: &str,
    what: &str,
    path: &mut Option<PathBuf>,
) -> Option<Problem> {
    let full = layered.base_dir_of(key).join(path.as_ref()?);
    let problem = |message: String| Problem {
        source: layered.source_of(key),
        key: key.to_string(),
        message,
    };
    match std::fs::metadata(&full) {
        Ok(m) if m.is_file() => {
            *path = Some(full.canonicalize().unwrap_or(full));
            None
        }
        Ok(_) => Some(problem(format!(
            "{what} {} is not a regular file (a folder, a pipe or a device)",
            full.display()
        ))),
        Err(_) => Some(problem(format!(
            "{what} {} does not exist (paths are relative to the file that sets them)",
            full.display()
        ))),
    }
}

/// The JSON Schema of experiment files, as committed in `schemas/experiment.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(ExperimentFile);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
