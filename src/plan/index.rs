//! The runs under a runs folder (`<runs>/<experiment>/<run>/manifest.json`), read once for a
//! command: the runs of an experiment newest first, finished stages by fingerprint (for
//! reuse), and runs whose manifest cannot be read, listed as damaged instead of vanishing.

use std::fs;
use std::path::{Path, PathBuf};

use super::manifest::{Manifest, Status};
use crate::slurm::SLURM_DIR;

/// One run folder.
#[derive(Debug, Clone)]
pub struct RunEntry {
    pub dir: PathBuf,
    /// The experiment folder it sits in.
    pub experiment: String,
    /// Its manifest, or why it cannot be read.
    pub manifest: Result<Manifest, String>,
}

impl RunEntry {
    /// The manifest, if readable.
    pub fn ok(&self) -> Option<&Manifest> {
        self.manifest.as_ref().ok()
    }
}

/// Every run folder under a runs folder.
#[derive(Debug, Clone, Default)]
pub struct RunIndex {
    pub runs_dir: PathBuf,
    /// Newest first (by start time, then folder name).
    pub runs: Vec<RunEntry>,
}

/// Folders directly under a runs folder that are not experiments.
fn is_experiment_folder(name: &str) -> bool {
    !name.starts_with('.') && name != SLURM_DIR
}

impl RunIndex {
    /// Reads `runs_dir`; a missing folder is an empty index.
    pub fn scan(runs_dir: &Path) -> Self {
        let mut runs = Vec::new();
        for exp in fs::read_dir(runs_dir).into_iter().flatten().flatten() {
            let experiment = exp.file_name().to_string_lossy().to_string();
            if !is_experiment_folder(&experiment) || !exp.path().is_dir() {
                continue;
            }
            for run in fs::read_dir(exp.path()).into_iter().flatten().flatten() {
                let dir = run.path();
                if !dir.is_dir() || run.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                let manifest = Manifest::load(&dir).map_err(|e| e.to_string());
                runs.push(RunEntry {
                    dir,
                    experiment: experiment.clone(),
                    manifest,
                });
            }
        }
        let started = |e: &RunEntry| e.ok().map(|m| m.started.clone()).unwrap_or_default();
        runs.sort_by(|a, b| (started(b), &b.dir).cmp(&(started(a), &a.dir)));
        Self {
            runs_dir: runs_dir.to_path_buf(),
            runs,
        }
    }

    /// The runs of experiment `name`, newest first, damaged ones included.
    pub fn of_experiment(&self, name: &str) -> impl Iterator<Item = &RunEntry> {
        let name = name.to_string();
        self.runs.iter().filter(move |r| r.experiment == name)
    }

    /// A finished stage with this fingerprint in a run other than `except`: its folder.
    pub fn finished_twin(&self, fingerprint: &str, except: Option<&Path>) -> Option<PathBuf> {
        let except = except.and_then(|e| e.canonicalize().ok());
        self.runs.iter().find_map(|run| {
            let m = run.ok()?;
            if except.is_some() && run.dir.canonicalize().ok() == except {
                return None;
            }
            m.stages.iter().find_map(|(name, record)| {
                let dir = run.dir.join(name);
                (record.fingerprint.as_deref() == Some(fingerprint)
                    && record.status == Status::Finished
                    && dir.is_dir())
                .then_some(dir)
            })
        })
    }

    /// The newest finished run of experiment `name` whose stages are exactly these
    /// (name, fingerprint) pairs.
    pub fn finished_run(&self, name: &str, prints: &[(String, String)]) -> Option<&RunEntry> {
        self.of_experiment(name).find(|run| {
            run.ok().is_some_and(|m| {
                m.status == Status::Finished
                    && m.stages.len() == prints.len()
                    && prints.iter().all(|(stage, print)| {
                        m.stages
                            .get(stage)
                            .is_some_and(|r| r.fingerprint.as_deref() == Some(print.as_str()))
                    })
            })
        })
    }
}
