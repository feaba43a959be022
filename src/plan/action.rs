//! What happens to a stage, and why: decided in one place from the run's manifest, its
//! checkpoints and the finished stages under the runs folder, for `plan`, `run` and
//! `--resume` alike.

use std::fmt;
use std::path::{Path, PathBuf};

use super::index::RunIndex;
use super::manifest::{Manifest, Status};
use crate::train::checkpoint;

/// What a stage's next step is.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Trained (or run) from the start.
    Train,
    /// Continued from the newest valid checkpoint of this run.
    Resume { step: u64 },
    /// A finished stage with the same fingerprint stands in for it: its folder.
    Reuse { from: PathBuf },
    /// A stage with the same fingerprint that an earlier experiment of this command trains
    /// first: its experiment (or sweep member).
    ReuseFromEarlier { member: String },
    /// Finished in this run already.
    Done,
}

impl Action {
    /// Whether the stage does work in this process.
    pub fn works(&self) -> bool {
        matches!(self, Self::Train | Self::Resume { .. })
    }
}

/// An action with the steps it concerns, as `plan` and `run` print it.
pub struct Shown<'a> {
    pub action: &'a Action,
    /// Training steps of the stage (0: it does not train).
    pub steps: u64,
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.action {
            Action::Train if self.steps > 0 => write!(f, "train {} steps", self.steps),
            Action::Train => f.write_str("run"),
            Action::Resume { step } => {
                write!(
                    f,
                    "resume at step {step} of {} (newest valid checkpoint)",
                    self.steps
                )
            }
            Action::Reuse { from } => {
                write!(f, "reuse {} (finished, same fingerprint)", from.display())
            }
            Action::ReuseFromEarlier { member } => write!(
                f,
                "reuse the same stage of `{member}`, trained earlier by this command"
            ),
            Action::Done => f.write_str("done (finished in this run)"),
        }
    }
}

/// Where a stage's state can come from.
pub struct Sources<'a> {
    pub index: &'a RunIndex,
    /// Take finished stages with the same fingerprint from other runs.
    pub reuse: bool,
    /// Fingerprint -> experiment that trains it earlier in this command.
    pub earlier: &'a [(String, String)],
    /// The run being continued, with its manifest (`None` for a new run).
    pub this_run: Option<(&'a Path, &'a Manifest)>,
}

/// The action of stage `name` with `fingerprint` (`checkpoints`: the stage's checkpoint folder
/// in the run being continued).
pub fn decide(name: &str, fingerprint: &str, checkpoints: Option<&Path>, s: &Sources) -> Action {
    if let Some((_, m)) = s.this_run
        && m.stages
            .get(name)
            .is_some_and(|r| r.status == Status::Finished)
    {
        return Action::Done;
    }
    if s.reuse {
        if let Some(from) = s
            .index
            .finished_twin(fingerprint, s.this_run.map(|(dir, _)| dir))
        {
            return Action::Reuse { from };
        }
        if let Some((_, member)) = s.earlier.iter().find(|(f, _)| f == fingerprint) {
            return Action::ReuseFromEarlier {
                member: member.clone(),
            };
        }
    }
    match checkpoints.and_then(checkpoint::newest_valid_step) {
        Some(step) if step > 0 => Action::Resume { step },
        _ => Action::Train,
    }
}
