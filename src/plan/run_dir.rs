//! The run directory: `<runs>/<experiment>/<timestamp>[-N]/` with the resolved `config.toml`,
//! `manifest.json`, the TensorBoard events and one folder per stage.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::manifest::Manifest;
use crate::config::{self, Resolved};
use crate::environment::Environment;

#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error(
        "cannot create the run directory under {dir}: {source}\n  (is the runs directory writable? choose another with --runs-dir)"
    )]
    Create {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Paths of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    /// Creates a new run folder for `experiment` under `runs`, named by `when` (a suffix `-2`,
    /// `-3`... when that second is taken). Never reuses an existing folder.
    pub fn create(runs: &Path, experiment: &str, when: DateTime<Utc>) -> Result<Self, RunDirError> {
        let parent = runs.join(experiment);
        let err = |source| RunDirError::Create {
            dir: parent.clone(),
            source,
        };
        fs::create_dir_all(&parent).map_err(err)?;
        let stamp = when.format("%Y-%m-%dT%H-%M-%S").to_string();
        for n in 1.. {
            let name = if n == 1 {
                stamp.clone()
            } else {
                format!("{stamp}-{n}")
            };
            let root = parent.join(name);
            match fs::create_dir(&root) {
                Ok(()) => return Ok(Self { root }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err(e)),
            }
        }
        unreachable!("the suffix loop only ends by returning")
    }

    /// An existing run folder.
    pub fn open(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    /// An existing run with its manifest and the configuration its `config.toml` holds (read
    /// without the environment or `--set`: as the run wrote it, or as someone edited it).
    pub fn open_existing(root: &Path) -> anyhow::Result<(Self, Manifest, Resolved)> {
        let run = Self::open(root);
        if !run.root.is_dir() {
            anyhow::bail!(
                "{} is not a folder; give a run folder such as runs/<experiment>/<timestamp> \
                 (ldm-run ls lists them)",
                run.root.display()
            );
        }
        let manifest = Manifest::load(&run.root).with_context(|| {
            format!(
                "{} is not a readable ldm-run run folder",
                run.root.display()
            )
        })?;
        let saved =
            config::resolve(&run.config(), &Environment::default(), &[]).with_context(|| {
                format!(
                    "cannot read the run's configuration {}",
                    run.config().display()
                )
            })?;
        Ok((run, manifest, saved))
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.toml")
    }

    pub fn stage(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn checkpoints(&self, stage: &str) -> PathBuf {
        self.stage(stage).join("checkpoints")
    }

    pub fn samples(&self, stage: &str) -> PathBuf {
        self.stage(stage).join("samples")
    }

    /// Writes `text` to `name` inside the run folder atomically.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf, RunDirError> {
        let path = self.root.join(name);
        crate::atomic_file::write(&path, text.as_bytes()).map_err(|e| RunDirError::Write {
            path: e.path,
            source: e.source,
        })?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn same_second_gets_a_suffix() {
        let runs = tempfile::tempdir().unwrap();
        let when = Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0).unwrap();
        let a = RunDir::create(runs.path(), "exp", when).unwrap();
        let b = RunDir::create(runs.path(), "exp", when).unwrap();
        assert!(a.root.ends_with("exp/2026-11-25T10-00-00"));
        assert!(b.root.ends_with("exp/2026-11-25T10-00-00-2"));
        a.write("config.toml", "x = 1\n").unwrap();
        assert_eq!(fs::read_to_string(a.config()).unwrap(), "x = 1\n");
    }

    #[test]
    fn unwritable_runs_dir_is_a_clear_error() {
        let runs = tempfile::tempdir().unwrap();
        let file = runs.path().join("not-a-dir");
        fs::write(&file, "").unwrap();
        let err = RunDir::create(&file, "exp", Utc::now())
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot create the run directory"), "{err}");
        assert!(err.contains("--runs-dir"), "{err}");
    }
}
