//! `ldm-run ls [RUNS_DIR] [--json]`: the runs under a runs folder, newest first, with their
//! status, stages, steps and final metrics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use anyhow::bail;

use crate::plan::index::{RunEntry, RunIndex};
use crate::plan::manifest::Manifest;

/// One run as `ls` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub experiment: String,
    pub run_dir: PathBuf,
    pub started: String,
    /// `pending`, `running`, `finished`, `failed`, `interrupted`, or `damaged` when the
    /// manifest cannot be read.
    pub status: String,
    /// Why a damaged run's manifest cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub damage: Option<String>,
    pub stages_done: usize,
    pub stages_total: usize,
    /// `<stage>: done/total` for training stages.
    pub steps: Vec<String>,
    /// `<stage>/<metric>` -> value.
    pub metrics: BTreeMap<String, f64>,
    /// Stages taken from other runs.
    pub reused: Vec<String>,
}

impl RunRow {
    pub fn of(dir: &Path, m: &Manifest) -> Self {
        let mut steps = Vec::new();
        let mut metrics = BTreeMap::new();
        let mut reused = Vec::new();
        for name in &m.order {
            let Some(r) = m.stages.get(name) else {
                continue;
            };
            if r.steps_total > 0 {
                steps.push(format!("{name} {}/{}", r.steps_done, r.steps_total));
            }
            metrics.extend(r.metrics.iter().map(|(k, v)| (format!("{name}/{k}"), *v)));
            if r.reused_from.is_some() {
                reused.push(name.clone());
            }
        }
        Self {
            experiment: m.experiment.clone(),
            run_dir: dir.to_path_buf(),
            started: m.started.clone(),
            status: m.status.as_str().to_string(),
            damage: None,
            stages_done: m.finished_stages().len(),
            stages_total: m.order.len(),
            steps,
            metrics,
            reused,
        }
    }

    /// A run of the index, damaged or not.
    pub fn of_entry(run: &RunEntry) -> Self {
        match &run.manifest {
            Ok(m) => Self::of(&run.dir, m),
            Err(why) => Self {
                experiment: run.experiment.clone(),
                run_dir: run.dir.clone(),
                started: String::new(),
                status: "damaged".into(),
                damage: Some(why.clone()),
                stages_done: 0,
                stages_total: 0,
                steps: Vec::new(),
                metrics: BTreeMap::new(),
                reused: Vec::new(),
            },
        }
    }
}

/// Every run under `runs_dir` (`<runs>/<experiment>/<run>/manifest.json`), newest first; runs
/// whose manifest cannot be read are listed as damaged. A runs folder that does not exist is
/// an error.
pub fn rows(runs_dir: &Path) -> anyhow::Result<Vec<RunRow>> {
    if !runs_dir.is_dir() {
        bail!(
            "{} is not a folder of runs{}; give the folder runs are written to (default: runs)",
            runs_dir.display(),
            if runs_dir.exists() {
                ""
            } else {
                " (it does not exist)"
            }
        );
    }
    let index = RunIndex::scan(runs_dir);
    let mut rows: Vec<RunRow> = index.runs.iter().map(RunRow::of_entry).collect();
    rows.sort_by(|a, b| {
        b.started
            .cmp(&a.started)
            .then(a.experiment.cmp(&b.experiment))
            .then(a.run_dir.cmp(&b.run_dir))
    });
    Ok(rows)
}

fn metric_text(metrics: &BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = metrics
        .iter()
        .map(|(k, v)| format!("{k} {}", crate::log::format_value(*v)))
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

/// The rows as an aligned text table.
pub fn render(rows: &[RunRow]) -> String {
    let header = ["experiment", "run", "status", "stages", "steps", "metrics"];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let run = r
                .run_dir
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().to_string());
            let stages = if r.reused.is_empty() {
                format!("{}/{}", r.stages_done, r.stages_total)
            } else {
                format!(
                    "{}/{} (reused: {})",
                    r.stages_done,
                    r.stages_total,
                    r.reused.join(",")
                )
            };
            let metrics = match &r.damage {
                Some(why) => format!("manifest unreadable: {why}"),
                None => metric_text(&r.metrics),
            };
            [
                r.experiment.clone(),
                run,
                r.status.clone(),
                stages,
                r.steps.join(", "),
                metrics,
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        let padded: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, &header.map(String::from));
    for row in &cells {
        line(&mut out, row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_lists_runs_with_metrics() {
        let mut stages = BTreeMap::new();
        stages.insert(
            "vae".to_string(),
            crate::plan::manifest::StageRecord {
                kind: "autoencoder".into(),
                status: crate::plan::manifest::Status::Finished,
                steps_done: 10,
                steps_total: 10,
                started: None,
                finished: None,
                metrics: BTreeMap::from([("test/psnr".to_string(), 25.25)]),
                notes: BTreeMap::new(),
                error: None,
                fingerprint: None,
                reused_from: Some("x".into()),
            },
        );
        let m = Manifest {
            experiment: "exp".into(),
            ldm_run_version: "0".into(),
            seed: 0,
            status: crate::plan::manifest::Status::Finished,
            started: "2026-01-01T00:00:00Z".into(),
            finished: None,
            stages,
            order: vec!["vae".into()],
            resumes: Vec::new(),
            layout: None,
            config: None,
        };
        let row = RunRow::of(Path::new("runs/exp/2026-01-01T00-00-00"), &m);
        let text = render(&[row]);
        assert!(text.starts_with("experiment  run"), "{text}");
        assert!(text.contains("exp         2026-01-01T00-00-00  finished  1/1 (reused: vae)  vae 10/10  vae/test/psnr 25.2"), "{text}");
    }
}
