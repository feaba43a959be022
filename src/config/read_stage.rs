//! Reading one stage table: its `kind` and `needs`, keys its kind does not take (with the
//! closest valid key, or the kind that does take it), then each settings group of the kind.

use std::cell::RefCell;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::{Problem, closest};
use super::load::Layered;
use super::stage::{
    AutoencoderStage, ClassifierStage, DiffusionStage, EvalStage, SampleStage, Stage, StageKind,
    StageSpec,
};
use super::validate::MAX_NAME;

/// What every stage table has.
#[derive(Deserialize)]
struct Head {
    kind: StageKind,
    #[serde(default)]
    needs: Vec<String>,
}

/// Whether `name` can name a stage (it becomes a folder of the run).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch))
}

/// The typed stage `name` of the layered experiment, or every problem of its table.
pub fn read(layered: &Layered, name: &str) -> Result<Stage, Vec<Problem>> {
    let table = format!("stages.{name}");
    if !valid_name(name) {
        return Err(vec![Problem {
            source: layered.source_of("stages"),
            key: format!("stages.\"{name}\""),
            message: format!(
                "`{name}` cannot name a stage: use 1 to {MAX_NAME} letters, digits, '-' and '_'"
            ),
        }]);
    }
    let head: Head = layered.extract_at(&table)?;
    let present = layered.keys_at(&table);
    let missing: Vec<Problem> = head
        .kind
        .required()
        .into_iter()
        .filter(|k| !present.contains(k))
        .map(|k| Problem {
            source: layered.source_of(&table),
            key: format!("{table}.{k}"),
            message: format!(
                "missing: a `{}` stage needs it (e.g. {k} = {})",
                head.kind.as_str(),
                example(&k)
            ),
        })
        .collect();
    if !missing.is_empty() {
        let mut all = unknown_keys(layered, &table, head.kind);
        all.extend(missing);
        return Err(all);
    }
    let reader = Groups {
        layered,
        table: &table,
        problems: RefCell::new(unknown_keys(layered, &table, head.kind)),
    };
    let spec = groups(head.kind, &reader);
    let problems = reader.problems.into_inner();
    match spec {
        Some(spec) if problems.is_empty() => Ok(Stage {
            spec,
            needs: head.needs,
        }),
        _ => Err(problems),
    }
}

/// The settings groups of a stage of `kind`, `None` if any group has a problem.
fn groups(kind: StageKind, reader: &Groups) -> Option<StageSpec> {
    Some(match kind {
        StageKind::Autoencoder => {
            let (train, held_out, loss, test) = (
                reader.group(),
                reader.group(),
                reader.group(),
                reader.group(),
            );
            StageSpec::Autoencoder(AutoencoderStage {
                train: train?,
                held_out: held_out?,
                loss: loss?,
                test: test?,
            })
        }
        StageKind::Diffusion => {
            let (train, held_out, ema, noise, judge, sampling, grid, input) = (
                reader.group(),
                reader.group(),
                reader.group(),
                reader.group(),
                reader.group(),
                reader.group(),
                reader.group(),
                reader.group(),
            );
            StageSpec::Diffusion(DiffusionStage {
                train: train?,
                held_out: held_out?,
                ema: ema?,
                noise: noise?,
                judge: judge?,
                sampling: sampling?,
                grid: grid?,
                input: input?,
            })
        }
        StageKind::Sample => {
            let (sampling, grid, input) = (reader.group(), reader.group(), reader.group());
            StageSpec::Sample(SampleStage {
                sampling: sampling?,
                grid: grid?,
                input: input?,
            })
        }
        StageKind::Classifier => {
            let (train, ema) = (reader.group(), reader.group());
            StageSpec::Classifier(ClassifierStage {
                train: train?,
                ema: ema?,
            })
        }
        StageKind::Eval => {
            let (sampling, measure, test, input) = (
                reader.group(),
                reader.group(),
                reader.group(),
                reader.group(),
            );
            StageSpec::Eval(EvalStage {
                sampling: sampling?,
                measure: measure?,
                test: test?,
                input: input?,
            })
        }
    })
}

/// An example value of a required key, for its message.
fn example(key: &str) -> &'static str {
    match key {
        "steps" => "1000",
        "batch_size" => "32",
        "lr" => "1e-4",
        _ => "...",
    }
}

/// Reads the settings groups of one stage table, collecting every group's problems.
struct Groups<'a> {
    layered: &'a Layered,
    table: &'a str,
    problems: RefCell<Vec<Problem>>,
}

impl Groups<'_> {
    fn group<T: DeserializeOwned>(&self) -> Option<T> {
        self.layered
            .extract_at(self.table)
            .map_err(|p| self.problems.borrow_mut().extend(p))
            .ok()
    }
}

/// Keys of the table that a stage of `kind` does not take.
fn unknown_keys(layered: &Layered, table: &str, kind: StageKind) -> Vec<Problem> {
    let valid = kind.keys();
    let valid_refs: Vec<&str> = valid.iter().map(String::as_str).collect();
    layered
        .keys_at(table)
        .into_iter()
        .filter(|k| k != "kind" && k != "needs" && !valid.contains(k))
        .map(|k| {
            let key = format!("{table}.{k}");
            let owners: Vec<&str> = StageKind::ALL
                .iter()
                .filter(|other| other.keys().contains(&k))
                .map(|other| other.as_str())
                .collect();
            let hint = if !owners.is_empty() {
                format!(
                    " for `{}` stages; it is a setting of {} stages",
                    kind.as_str(),
                    owners
                        .iter()
                        .map(|o| format!("`{o}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )
            } else {
                closest(&k, &valid_refs)
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default()
            };
            Problem {
                source: layered.source_of(&key),
                message: format!(
                    "unknown key{hint} (`{}` stages take: kind, needs, {})",
                    kind.as_str(),
                    valid.join(", ")
                ),
                key,
            }
        })
        .collect()
}
