//! `ldm-run ls [RUNS_DIR] [--metrics a,b] [--json]`: the runs under a runs folder, newest
//! first, with their status, stages, steps and the few final metrics that compare runs in
//! aligned columns (`--json` gives every metric).

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

/// The metric columns `ls` shows when none are asked for: what compares runs at a glance.
pub const DEFAULT_METRICS: &[&str] = &["accuracy", "frechet", "kid", "test/psnr", "best_step"];

/// The columns for metric `name`: every key some row has that is `name` itself or
/// `<stage>/<name>` (`accuracy` gives `clf/accuracy` and `eval/accuracy`), in the order met.
fn columns_for(name: &str, rows: &[RunRow]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in rows {
        for key in r.metrics.keys() {
            let matches = key == name || key.split_once('/').is_some_and(|(_, rest)| rest == name);
            if matches && !out.contains(key) {
                out.push(key.clone());
            }
        }
    }
    out
}

/// The metric columns for `asked` (empty: [`DEFAULT_METRICS`], those no run has left out).
/// A name asked for that no run has is refused, with the names the runs do have.
pub fn columns(rows: &[RunRow], asked: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    if asked.is_empty() {
        for name in DEFAULT_METRICS {
            out.extend(columns_for(name, rows));
        }
        return Ok(out);
    }
    for name in asked {
        let found = columns_for(name, rows);
        if found.is_empty() && !rows.is_empty() {
            let known: std::collections::BTreeSet<&str> = rows
                .iter()
                .flat_map(|r| r.metrics.keys())
                .map(|k| k.split_once('/').map_or(k.as_str(), |(_, rest)| rest))
                .collect();
            let known: Vec<&str> = known.into_iter().collect();
            let hint = crate::config::error::closest(name, &known)
                .map_or(String::new(), |c| format!(" (did you mean '{c}'?)"));
            anyhow::bail!(
                "ls --metrics: no run has a metric '{name}'{hint}; the runs have: {}",
                if known.is_empty() {
                    "none yet".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
        for key in found {
            if !out.contains(&key) {
                out.push(key);
            }
        }
    }
    Ok(out)
}

/// What `ls` prints for the runs under `runs_dir`: `--json` gives every field of every run,
/// else a table with the metric columns `asked` (see [`columns`]).
pub fn text(runs_dir: &Path, asked: &[String], json: bool) -> anyhow::Result<String> {
    let rows = rows(runs_dir)?;
    if json {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&rows)?));
    }
    let columns = columns(&rows, asked)?;
    if rows.is_empty() {
        return Ok(format!("no runs under {}\n", runs_dir.display()));
    }
    Ok(render(&rows, &columns))
}

/// The rows as an aligned text table: experiment, run, status, stages, steps, and one column
/// per metric key of `metric_columns` (`-` where a run has none).
pub fn render(rows: &[RunRow], metric_columns: &[String]) -> String {
    let mut header: Vec<String> = ["experiment", "run", "status", "stages", "steps"]
        .map(String::from)
        .to_vec();
    header.extend(metric_columns.iter().cloned());
    let cells: Vec<Vec<String>> = rows
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
            let status = match &r.damage {
                Some(why) => format!("damaged (manifest unreadable: {why})"),
                None => r.status.clone(),
            };
            let mut row = vec![
                r.experiment.clone(),
                run,
                status,
                stages,
                r.steps.join(", "),
            ];
            row.extend(metric_columns.iter().map(|k| {
                r.metrics
                    .get(k)
                    .map_or_else(|| "-".to_string(), |v| crate::log::format_value(*v))
            }));
            row
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(String::len).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        let padded: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        let _ = writeln!(out, "{}", padded.join("  ").trim_end());
    };
    line(&mut out, &header);
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
        let rows = [row];
        let asked = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let cols = columns(&rows, &asked(&["test/psnr", "vae/test/psnr"])).unwrap();
        assert_eq!(
            cols,
            ["vae/test/psnr"],
            "one column for two names of one key"
        );
        let text = render(&rows, &cols);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "experiment  run                  status    stages             steps      vae/test/psnr"
        );
        assert_eq!(
            lines[1],
            "exp         2026-01-01T00-00-00  finished  1/1 (reused: vae)  vae 10/10  25.2"
        );
        assert_eq!(columns(&rows, &[]).unwrap(), ["vae/test/psnr"]);
        let err = columns(&rows, &asked(&["test/psnrr"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no run has a metric 'test/psnrr'"), "{err}");
        assert!(err.contains("did you mean 'test/psnr'?"), "{err}");
        let none = render(&rows, &[]);
        assert!(!none.contains("kid"), "no column without a value: {none}");
    }
}
