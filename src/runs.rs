//! Finding earlier runs under a runs folder.

use std::path::{Path, PathBuf};

use crate::config::Resolved;
use crate::plan::fingerprint::fingerprints;
use crate::plan::manifest::Manifest;

/// Run folders of `experiment` under `runs_dir` with their manifests, newest first.
pub fn of_experiment(runs_dir: &Path, experiment: &str) -> Vec<(PathBuf, Manifest)> {
    let mut found: Vec<(PathBuf, Manifest)> = std::fs::read_dir(runs_dir.join(experiment))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            Manifest::load(&dir).ok().map(|m| (dir, m))
        })
        .collect();
    found.sort_by(|a, b| (&b.1.started, &b.0).cmp(&(&a.1.started, &a.0)));
    found
}

/// The newest run of this experiment whose saved configuration is exactly `resolved`'s and
/// whose stages have today's fingerprints (files a configuration names, such as LPIPS weights,
/// can change under the same path).
pub fn latest_matching(runs_dir: &Path, resolved: &Resolved) -> Option<(PathBuf, Manifest)> {
    let wanted = resolved.to_toml();
    let prints = fingerprints(resolved);
    of_experiment(runs_dir, &resolved.experiment.experiment.name)
        .into_iter()
        .find(|(dir, m)| {
            let same_prints = m.stages.iter().all(|(name, stage)| {
                stage.fingerprint.is_none() || stage.fingerprint.as_ref() == prints.get(name)
            });
            same_prints
                && std::fs::read_to_string(dir.join("config.toml")).is_ok_and(|t| t == wanted)
        })
}
