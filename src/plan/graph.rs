//! The stage graph: each stage names the stages it needs; they run in dependency order.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::StageKind;
use crate::config::error::closest;

/// What each kind of stage needs, exactly one stage of each listed kind.
pub fn required_kinds(kind: StageKind) -> &'static [StageKind] {
    match kind {
        StageKind::Autoencoder => &[],
        StageKind::Diffusion => &[StageKind::Autoencoder],
        StageKind::Sample => &[StageKind::Diffusion],
        StageKind::Classifier => &[],
        StageKind::Eval => &[StageKind::Diffusion, StageKind::Classifier],
    }
}

/// What each kind of stage may also need, at most one stage of each listed kind: a diffusion
/// stage that needs a classifier stage judges samples while it trains.
pub fn optional_kinds(kind: StageKind) -> &'static [StageKind] {
    match kind {
        StageKind::Diffusion => &[StageKind::Classifier],
        _ => &[],
    }
}

/// Among stages that could run next, the pipeline's natural order: autoencoder, diffusion,
/// sampling, then the classifier and the evaluation that judge the samples.
fn rank(kind: StageKind) -> u8 {
    match kind {
        StageKind::Autoencoder => 0,
        StageKind::Diffusion => 1,
        StageKind::Sample => 2,
        StageKind::Classifier => 3,
        StageKind::Eval => 4,
    }
}

/// A graph problem, tied to the stage whose `needs` is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphError {
    pub stage: String,
    pub message: String,
}

/// Orders `stages` (name -> (kind, needs)) so every stage comes after what it needs.
/// Ties are broken by kind (see [`rank`]), then by name, so the order is the same on every run.
pub fn order(
    stages: &BTreeMap<String, (StageKind, Vec<String>)>,
) -> Result<Vec<String>, Vec<GraphError>> {
    let unknown: Vec<GraphError> = stages
        .iter()
        .flat_map(|(name, (_, needs))| needs.iter().map(move |need| (name, need)))
        .filter(|(_, need)| !stages.contains_key(*need))
        .map(|(name, need)| {
            let known: Vec<&str> = stages.keys().map(String::as_str).collect();
            let hint = closest(need, &known)
                .map(|c| format!("did you mean `{c}`? "))
                .unwrap_or_default();
            GraphError {
                stage: name.clone(),
                message: format!(
                    "needs `{need}`, which is not a stage of this experiment ({hint}stages: {})",
                    known.join(", ")
                ),
            }
        })
        .collect();
    if !unknown.is_empty() {
        return Err(unknown);
    }
    let mut done: Vec<String> = Vec::new();
    let mut left: BTreeSet<&String> = stages.keys().collect();
    while !left.is_empty() {
        let ready = left
            .iter()
            .filter(|n| stages[n.as_str()].1.iter().all(|d| done.contains(d)))
            .min_by_key(|n| (rank(stages[n.as_str()].0), n.as_str()))
            .copied();
        let Some(name) = ready else {
            let cycle = cycle_among(&left, stages);
            return Err(vec![GraphError {
                stage: cycle[0].clone(),
                message: format!("stages form a cycle: {}", cycle.join(" -> ")),
            }]);
        };
        left.remove(name);
        done.push(name.clone());
    }
    let mut errors = Vec::new();
    for (name, (kind, needs)) in stages {
        check_kinds(name, *kind, needs, stages, &mut errors);
    }
    if errors.is_empty() {
        Ok(done)
    } else {
        Err(errors)
    }
}

fn check_kinds(
    name: &str,
    kind: StageKind,
    needs: &[String],
    stages: &BTreeMap<String, (StageKind, Vec<String>)>,
    errors: &mut Vec<GraphError>,
) {
    let wanted = required_kinds(kind);
    let optional = optional_kinds(kind);
    let mut describe = if wanted.is_empty() {
        "nothing".to_string()
    } else {
        wanted
            .iter()
            .map(|k| format!("one `{}` stage", k.as_str()))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    for k in optional {
        describe.push_str(&format!(" (and optionally one `{}` stage)", k.as_str()));
    }
    let mut given: Vec<StageKind> = needs
        .iter()
        .filter_map(|n| stages.get(n).map(|(k, _)| *k))
        .collect();
    given.sort_by_key(|k| k.as_str());
    let with_optional = |extra: &[StageKind]| {
        let mut all: Vec<StageKind> = wanted.iter().chain(extra).copied().collect();
        all.sort_by_key(|k| k.as_str());
        all
    };
    let fits = given == with_optional(&[])
        || optional
            .iter()
            .any(|o| given == with_optional(std::slice::from_ref(o)));
    if !fits {
        let got: Vec<String> = needs
            .iter()
            .map(|n| format!("`{n}` ({})", stages[n].0.as_str()))
            .collect();
        errors.push(GraphError {
            stage: name.to_string(),
            message: format!(
                "a `{}` stage needs {}, but `needs` lists {}",
                kind.as_str(),
                describe,
                if got.is_empty() {
                    "nothing".to_string()
                } else {
                    got.join(", ")
                }
            ),
        });
    }
}

/// A cycle among stages that could not be ordered (each of them needs another one of them).
fn cycle_among(
    left: &BTreeSet<&String>,
    stages: &BTreeMap<String, (StageKind, Vec<String>)>,
) -> Vec<String> {
    let first = left
        .iter()
        .next()
        .map(|s| s.to_string())
        .unwrap_or_default();
    let mut path = vec![first.clone()];
    let mut at = first;
    loop {
        let next = stages[&at]
            .1
            .iter()
            .find(|n| left.contains(n))
            .cloned()
            .unwrap_or_default();
        if let Some(pos) = path.iter().position(|p| *p == next) {
            let mut cycle = path[pos..].to_vec();
            cycle.push(next);
            return cycle;
        }
        path.push(next.clone());
        at = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(items: &[(&str, StageKind, &[&str])]) -> BTreeMap<String, (StageKind, Vec<String>)> {
        items
            .iter()
            .map(|(n, k, needs)| {
                (
                    n.to_string(),
                    (*k, needs.iter().map(|s| s.to_string()).collect()),
                )
            })
            .collect()
    }

    #[test]
    fn stages_run_after_what_they_need() {
        let g = graph(&[
            ("a_samples", StageKind::Sample, &["ldm"]),
            ("ldm", StageKind::Diffusion, &["vae"]),
            ("vae", StageKind::Autoencoder, &[]),
        ]);
        assert_eq!(order(&g).unwrap(), vec!["vae", "ldm", "a_samples"]);
    }

    #[test]
    fn unknown_stage_is_named() {
        let g = graph(&[
            ("ldm", StageKind::Diffusion, &["vea"]),
            ("vae", StageKind::Autoencoder, &[]),
        ]);
        let errs = order(&g).unwrap_err();
        assert_eq!(errs[0].stage, "ldm");
        assert!(errs[0].message.contains("`vea`"), "{}", errs[0].message);
        assert!(
            errs[0].message.contains("did you mean `vae`?"),
            "{}",
            errs[0].message
        );
        assert!(
            errs[0].message.contains("stages: ldm, vae"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn wrong_kind_is_refused() {
        let g = graph(&[
            ("s", StageKind::Sample, &["vae"]),
            ("vae", StageKind::Autoencoder, &[]),
        ]);
        let errs = order(&g).unwrap_err();
        assert!(
            errs[0].message.contains("a `sample` stage needs one `diffusion` stage, but `needs` lists `vae` (autoencoder)"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn a_diffusion_stage_may_need_one_classifier_which_runs_first() {
        let g = graph(&[
            ("clf", StageKind::Classifier, &[]),
            ("ldm", StageKind::Diffusion, &["vae", "clf"]),
            ("vae", StageKind::Autoencoder, &[]),
        ]);
        assert_eq!(order(&g).unwrap(), vec!["vae", "clf", "ldm"]);
        let g = graph(&[
            ("a", StageKind::Classifier, &[]),
            ("b", StageKind::Classifier, &[]),
            ("ldm", StageKind::Diffusion, &["vae", "a", "b"]),
            ("vae", StageKind::Autoencoder, &[]),
        ]);
        let errs = order(&g).unwrap_err();
        assert!(
            errs[0].message.contains(
                "a `diffusion` stage needs one `autoencoder` stage (and optionally one \
                 `classifier` stage), but `needs` lists `vae` (autoencoder), `a` (classifier), \
                 `b` (classifier)"
            ),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn cycle_is_reported_with_its_path() {
        let g = graph(&[
            ("vae", StageKind::Autoencoder, &[]),
            ("x", StageKind::Sample, &["y"]),
            ("y", StageKind::Diffusion, &["x"]),
        ]);
        let errs = order(&g).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].message, "stages form a cycle: x -> y -> x");
    }
}
