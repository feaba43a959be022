//! The plan: the one place that turns a resolved experiment (or sweep member) into what will
//! happen, before anything is written. For every stage, in execution order: its typed work and
//! inputs by role ([`task`]), its fingerprint ([`fingerprint`]) and its action with the reason
//! ([`action`]: train, resume, reuse a finished twin, done). Everything that can be known
//! before training is checked while planning ([`checks`]: graph, files the configuration
//! names, memory). `plan`, `run`, `--resume`, `submit` and `ls` all read plans or the run
//! index they are built from.

pub mod action;
pub mod checks;
pub mod fingerprint;
pub mod graph;
pub mod index;
pub mod lock;
pub mod manifest;
pub mod memory;
pub mod params;
pub mod reuse;
pub mod run_dir;
pub mod task;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use action::Action;
pub use index::RunIndex;
pub use task::{ModelRef, Task};

use crate::config::{ConfigError, Problem, Resolved};
use manifest::Manifest;

/// One stage as planned.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    pub name: String,
    pub task: Task,
    pub needs: Vec<String>,
    pub fingerprint: String,
    pub action: Action,
}

impl PlannedStage {
    /// Training steps of the stage (0 for stages that do not train).
    pub fn steps(&self) -> u64 {
        self.task.train().map_or(0, |t| t.steps as u64)
    }
}

/// What the run as a whole does.
#[derive(Debug, Clone, PartialEq)]
pub enum RunAction {
    /// A new run folder under `<runs>/<experiment>/`.
    New,
    /// A run with these very stages finished already: nothing to do.
    Finished { dir: PathBuf },
    /// Continue this run folder.
    Resume { dir: PathBuf },
}

/// Everything that will happen for one experiment.
#[derive(Debug, Clone)]
pub struct Plan {
    pub resolved: Resolved,
    pub run: RunAction,
    /// In execution order.
    pub stages: Vec<PlannedStage>,
}

/// How plans are made: the runs folder's state and the user's choices.
pub struct Planning<'a> {
    pub index: &'a RunIndex,
    pub reuse: bool,
    pub memory: checks::MemoryCheck,
}

impl Plan {
    /// The stages in execution order with their tasks, or the graph's problems.
    fn ordered(resolved: &Resolved) -> Result<Vec<(String, Task)>, ConfigError> {
        let stages = &resolved.experiment.stages;
        let kinds: BTreeMap<String, _> = stages
            .iter()
            .map(|(n, s)| (n.clone(), (s.spec.kind(), s.needs.clone())))
            .collect();
        let order = graph::order(&kinds).map_err(|errors| {
            ConfigError::Invalid(
                errors
                    .into_iter()
                    .map(|e| {
                        let key = format!("stages.{}.needs", e.stage);
                        Problem {
                            source: resolved.source_of(&key),
                            key,
                            message: e.message,
                        }
                    })
                    .collect(),
            )
        })?;
        Ok(order
            .into_iter()
            .filter_map(|name| task::of(&name, stages).map(|t| (name, t)))
            .collect())
    }

    /// The plan of a new run of `resolved`. `earlier`: fingerprints of stages that experiments
    /// planned before this one in the same command will train, with their names.
    pub fn new_run(
        resolved: Resolved,
        p: &Planning,
        earlier: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let tasks = Self::ordered(&resolved)?;
        checks::check(&resolved, &tasks, p.memory)?;
        let order: Vec<String> = tasks.iter().map(|(n, _)| n.clone()).collect();
        let prints = fingerprint::fingerprints(&resolved.experiment, &order);
        let pairs: Vec<(String, String)> = order
            .iter()
            .map(|n| (n.clone(), prints[n].clone()))
            .collect();
        if p.reuse
            && let Some(run) = p.index.finished_run(resolved.name(), &pairs)
        {
            let dir = run.dir.clone();
            let stages = Self::stages(&resolved, tasks, &prints, |_, _| Action::Done);
            return Ok(Self {
                resolved,
                run: RunAction::Finished { dir },
                stages,
            });
        }
        let sources = action::Sources {
            index: p.index,
            reuse: p.reuse,
            earlier,
            this_run: None,
        };
        let stages = Self::stages(&resolved, tasks, &prints, |name, print| {
            action::decide(name, print, None, &sources)
        });
        Ok(Self {
            resolved,
            run: RunAction::New,
            stages,
        })
    }

    /// The plan of continuing the run in `dir` (whose manifest is `manifest`) with `resolved`.
    pub fn resume(
        resolved: Resolved,
        dir: &Path,
        manifest: &Manifest,
        p: &Planning,
    ) -> Result<Self, ConfigError> {
        let tasks = Self::ordered(&resolved)?;
        checks::check(&resolved, &tasks, p.memory)?;
        let order: Vec<String> = tasks.iter().map(|(n, _)| n.clone()).collect();
        let prints = fingerprint::fingerprints(&resolved.experiment, &order);
        let run = run_dir::RunDir::open(dir);
        let sources = action::Sources {
            index: p.index,
            reuse: p.reuse,
            earlier: &[],
            this_run: Some((dir, manifest)),
        };
        let stages = Self::stages(&resolved, tasks, &prints, |name, print| {
            action::decide(name, print, Some(&run.checkpoints(name)), &sources)
        });
        Ok(Self {
            resolved,
            run: RunAction::Resume {
                dir: dir.to_path_buf(),
            },
            stages,
        })
    }

    fn stages(
        resolved: &Resolved,
        tasks: Vec<(String, Task)>,
        prints: &BTreeMap<String, String>,
        decide: impl Fn(&str, &str) -> Action,
    ) -> Vec<PlannedStage> {
        tasks
            .into_iter()
            .map(|(name, task)| {
                let print = prints[&name].clone();
                PlannedStage {
                    action: decide(&name, &print),
                    needs: resolved.experiment.stages[&name].needs.clone(),
                    fingerprint: print,
                    name,
                    task,
                }
            })
            .collect()
    }

    pub fn name(&self) -> &str {
        self.resolved.name()
    }

    /// Fingerprints of the stages this plan trains, with the experiment's name (for the plans
    /// made after it in the same command).
    pub fn trained_fingerprints(&self) -> Vec<(String, String)> {
        self.stages
            .iter()
            .filter(|s| s.action.works())
            .map(|s| (s.fingerprint.clone(), self.name().to_string()))
            .collect()
    }
}

/// Plans every experiment of a command in order: a stage an earlier one trains shows as reused
/// by the later ones.
pub fn plan_new_runs(all: Vec<Resolved>, p: &Planning) -> Result<Vec<Plan>, ConfigError> {
    let mut plans: Vec<Plan> = Vec::new();
    let mut earlier: Vec<(String, String)> = Vec::new();
    let mut problems = Vec::new();
    for resolved in all {
        match Plan::new_run(resolved, p, &earlier) {
            Ok(plan) => {
                earlier.extend(plan.trained_fingerprints());
                plans.push(plan);
            }
            Err(ConfigError::Invalid(found)) => problems.extend(found),
            Err(other) => return Err(other),
        }
    }
    if problems.is_empty() {
        Ok(plans)
    } else {
        Err(ConfigError::Invalid(problems))
    }
}
