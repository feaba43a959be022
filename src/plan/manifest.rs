//! `manifest.json`: what a run is and how far it got, rewritten atomically after every change.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a run or a stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Running,
    Finished,
    Failed,
    Interrupted,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
            Self::Interrupted => "interrupted",
        }
    }
}

/// One stage's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRecord {
    pub kind: String,
    pub status: Status,
    pub steps_done: u64,
    pub steps_total: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Final numbers (losses, PSNR, accuracy...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// Facts later stages or users need (scale factor, files written...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Hash of everything that decides what the stage produces (see `plan::fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The finished stage folder this stage's artifacts were linked from, when reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
}

/// One resume of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeRecord {
    pub at: String,
    /// The run's status when it was resumed.
    pub from_status: Status,
    /// Resumed with `--force` despite changed training settings.
    pub forced: bool,
    /// Keys whose values changed at the resume (`key: old -> new`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changed: Vec<String>,
}

/// The whole run's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub experiment: String,
    pub ldm_run_version: String,
    pub seed: u64,
    pub status: Status,
    pub started: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Stage name -> record, in execution order of `order`.
    pub stages: BTreeMap<String, StageRecord>,
    pub order: Vec<String>,
    /// Every resume of this run, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resumes: Vec<ResumeRecord>,
    /// The resolved configuration the run was started (or last forced) with, to tell a
    /// `config.toml` edited by hand from the one the run wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// How the run splits its batches (processes x shards per process); a resume must split
    /// them the same way (absent in runs of ldm-run versions that did not record it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<crate::dist::Layout>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid ldm-run manifest: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The current time as an RFC 3339 string (UTC, seconds).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Manifest {
    pub fn path(run_dir: &Path) -> PathBuf {
        run_dir.join("manifest.json")
    }

    pub fn load(run_dir: &Path) -> Result<Self, ManifestError> {
        let path = Self::path(run_dir);
        let text = fs::read_to_string(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| ManifestError::Parse { path, source })
    }

    /// Writes the manifest atomically.
    pub fn save(&self, run_dir: &Path) -> Result<(), ManifestError> {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        crate::atomic_file::write(&Self::path(run_dir), text.as_bytes()).map_err(|e| {
            ManifestError::Write {
                path: e.path,
                source: e.source,
            }
        })
    }

    pub fn stage_mut(&mut self, name: &str) -> Option<&mut StageRecord> {
        self.stages.get_mut(name)
    }

    /// Stages finished so far, in execution order.
    pub fn finished_stages(&self) -> Vec<&str> {
        self.order
            .iter()
            .filter(|n| {
                self.stages
                    .get(*n)
                    .is_some_and(|s| s.status == Status::Finished)
            })
            .map(String::as_str)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut stages = BTreeMap::new();
        stages.insert(
            "vae".to_string(),
            StageRecord {
                kind: "autoencoder".into(),
                status: Status::Finished,
                steps_done: 10,
                steps_total: 10,
                started: Some(now()),
                finished: Some(now()),
                metrics: BTreeMap::from([("psnr".to_string(), 25.5)]),
                notes: BTreeMap::new(),
                error: None,
                fingerprint: None,
                reused_from: None,
            },
        );
        let m = Manifest {
            experiment: "x".into(),
            ldm_run_version: "0.1.0".into(),
            seed: 3,
            status: Status::Running,
            started: now(),
            finished: None,
            stages,
            order: vec!["vae".into()],
            resumes: Vec::new(),
            layout: None,
            config: None,
        };
        m.save(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), m);
        assert_eq!(m.finished_stages(), vec!["vae"]);
        let text = fs::read_to_string(dir.path().join("manifest.json")).unwrap();
        assert!(text.contains("\"status\": \"running\""), "{text}");
    }
}
