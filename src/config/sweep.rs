//! `[sweep]`: keys mapped to lists of values; the experiment runs once per combination (the
//! cartesian product), each member named after its values.

use std::collections::BTreeMap;

use super::error::{ConfigError, Problem};
use super::overrides::KeyOverride;

/// One combination of swept values.
#[derive(Debug, Clone)]
pub struct Member {
    /// Appended to the experiment name, e.g. `lr0.0001-guidance3`.
    pub suffix: String,
    /// The member's values, as overrides layered right after the experiment file.
    pub overrides: Vec<KeyOverride>,
}

/// Most members a sweep may have (each is a whole experiment).
pub const MAX_MEMBERS: usize = 1000;

impl Member {
    /// The member's values, e.g. `stages.ldm.lr = 0.0001, stages.sample.guidance = 3.0`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .overrides
            .iter()
            .map(|o| format!("{} = {}", o.key, o.value))
            .collect();
        parts.join(", ")
    }
}

/// A value as it appears in a member's name.
fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => format!("{f}"),
        other => other.to_string(),
    }
}

fn safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The members of a sweep, in a fixed order (keys sorted, values in the order listed).
/// `source` names where the `[sweep]` table came from, for messages.
pub fn members(
    sweep: &BTreeMap<String, Vec<serde_json::Value>>,
    source: &str,
) -> Result<Vec<Member>, ConfigError> {
    let mut problems = Vec::new();
    let mut axes: Vec<(String, Vec<toml::Value>)> = Vec::new();
    for (key, values) in sweep {
        if values.is_empty() {
            problems.push(Problem {
                source: source.to_string(),
                key: format!("sweep.\"{key}\""),
                message: "lists no values; give at least one".into(),
            });
            continue;
        }
        match values
            .iter()
            .map(toml::Value::try_from)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(v) => axes.push((key.clone(), v)),
            Err(e) => problems.push(Problem {
                source: source.to_string(),
                key: format!("sweep.\"{key}\""),
                message: format!("a value cannot be used: {e}"),
            }),
        }
    }
    let size = axes
        .iter()
        .try_fold(1usize, |n, (_, v)| n.checked_mul(v.len()));
    if size.is_none_or(|n| n > MAX_MEMBERS) {
        let counts: Vec<String> = axes
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.len()))
            .collect();
        problems.push(Problem {
            source: source.to_string(),
            key: "sweep".into(),
            message: format!(
                "the grid has {} members ({}); at most {MAX_MEMBERS} are run from one file: \
                 split it into several files or list fewer values",
                size.map_or_else(|| "too many".to_string(), |n| n.to_string()),
                counts.join(" x ")
            ),
        });
    }
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    // Short names (the key's last part) unless two swept keys end the same way.
    let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    let ambiguous = {
        let mut lasts: Vec<String> = axes.iter().map(|(k, _)| last(k)).collect();
        lasts.sort();
        lasts.windows(2).any(|w| w[0] == w[1])
    };
    let mut members = vec![Member {
        suffix: String::new(),
        overrides: Vec::new(),
    }];
    for (key, values) in &axes {
        let label = if ambiguous {
            key.replace('.', "_")
        } else {
            last(key)
        };
        let label = &label;
        members = members
            .into_iter()
            .flat_map(|m| {
                values.iter().map(move |v| {
                    let mut next = m.clone();
                    let part = safe(&format!("{label}{}", show(v)));
                    next.suffix = if next.suffix.is_empty() {
                        part
                    } else {
                        format!("{}-{part}", next.suffix)
                    };
                    next.overrides.push(KeyOverride {
                        origin: format!("`[sweep]` value {key} = {v}"),
                        key: key.clone(),
                        value: v.clone(),
                    });
                    next
                })
            })
            .collect();
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cartesian_product_named_by_values() {
        let sweep = BTreeMap::from([
            ("stages.ldm.lr".to_string(), vec![json!(1e-4), json!(2e-4)]),
            (
                "stages.sample.guidance".to_string(),
                vec![json!(1.0), json!(3.0), json!(5.0)],
            ),
        ]);
        let m = members(&sweep, "file x.toml").unwrap();
        assert_eq!(m.len(), 6);
        let names: Vec<&str> = m.iter().map(|m| m.suffix.as_str()).collect();
        assert_eq!(names[0], "lr0.0001-guidance1");
        assert_eq!(names[5], "lr0.0002-guidance5");
        assert_eq!(m[1].overrides[1].key, "stages.sample.guidance");
        assert_eq!(m[1].overrides[1].value, toml::Value::Float(3.0));
    }

    #[test]
    fn same_last_part_uses_the_whole_key() {
        let sweep = BTreeMap::from([
            ("stages.vae.lr".to_string(), vec![json!(1)]),
            ("stages.ldm.lr".to_string(), vec![json!("x y")]),
        ]);
        let m = members(&sweep, "file x.toml").unwrap();
        assert_eq!(m[0].suffix, "stages_ldm_lrx_y-stages_vae_lr1");
    }

    #[test]
    fn huge_grids_are_refused_before_they_are_built() {
        let values: Vec<serde_json::Value> = (0..10_000).map(|i| json!(i)).collect();
        let sweep = BTreeMap::from([
            ("stages.ldm.lr".to_string(), values.clone()),
            ("stages.ldm.steps".to_string(), values),
        ]);
        let err = members(&sweep, "file x.toml").unwrap_err().to_string();
        assert!(err.contains("100000000 members"), "{err}");
        assert!(err.contains("at most 1000"), "{err}");
    }

    #[test]
    fn empty_list_is_refused() {
        let sweep = BTreeMap::from([("stages.ldm.lr".to_string(), vec![])]);
        let err = members(&sweep, "file x.toml").unwrap_err().to_string();
        assert!(err.contains("lists no values"), "{err}");
    }
}
