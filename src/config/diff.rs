//! Which settings differ between two resolved experiments, and whether a difference changes
//! what training computes (a resume refuses those).

use std::collections::BTreeMap;

use super::schema::Experiment;

/// One key whose value differs (`None`: absent on that side).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyDiff {
    pub key: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

impl std::fmt::Display for KeyDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(unset)".into());
        write!(
            f,
            "{}: {} -> {}",
            self.key,
            show(&self.old),
            show(&self.new)
        )
    }
}

/// Keys that change where things are, how often they are logged or how samples are drawn, but
/// not the weights training produces. `*` matches one stage name.
const NOT_TRAINING: &[&str] = &[
    "experiment.device",
    "dataset.root",
    "dataset.download",
    "dataset.mirrors",
    "logging.*",
    "stages.*.checkpoint_every",
    "stages.*.keep_checkpoints",
    "stages.*.eval_images",
    "stages.*.sampler",
    "stages.*.sampler_steps",
    "stages.*.eta",
    "stages.*.spacing",
    "stages.*.sigmas",
    "stages.*.guidance",
    "stages.*.guidance_rescale",
    "stages.*.prompts_file",
    "stages.*.samples",
    "stages.*.guidance_sweep",
    "stages.*.sampler_sweep",
    "stages.*.sample_seed",
];

fn matches(pattern: &str, key: &str) -> bool {
    let (p, k): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), key.split('.').collect());
    if p.last() == Some(&"*") && p.len() == 2 {
        return k.first() == p.first();
    }
    p.len() == k.len() && p.iter().zip(&k).all(|(a, b)| *a == "*" || a == b)
}

/// Whether a change of `key` changes what training computes.
pub fn is_training_relevant(key: &str) -> bool {
    !NOT_TRAINING.iter().any(|p| matches(p, key))
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match value {
        serde_json::Value::Object(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

fn flat(value: &serde_json::Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    flatten("", value, &mut out);
    out
}

/// Every key whose value differs between `old` and `new`, sorted by key.
pub fn diff(old: &Experiment, new: &Experiment) -> Vec<KeyDiff> {
    let json = |e: &Experiment| serde_json::to_value(e).unwrap_or_default();
    diff_values(&json(old), &json(new))
}

/// [`diff`] of two experiments as JSON (the manifest records the run's configuration so).
pub fn diff_values(old: &serde_json::Value, new: &serde_json::Value) -> Vec<KeyDiff> {
    let (a, b) = (flat(old), flat(new));
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| KeyDiff {
            key: k.clone(),
            old: a.get(k).cloned(),
            new: b.get(k).cloned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_keys_are_listed_with_both_values() {
        let a = serde_json::json!({"stages": {"vae": {"lr": 0.001, "steps": 3}}});
        let b = serde_json::json!({"stages": {"vae": {"lr": 0.002, "steps": 3, "guidance": 2.0}}});
        let d = diff_values(&a, &b);
        let keys: Vec<&str> = d.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, vec!["stages.vae.guidance", "stages.vae.lr"]);
        assert_eq!(d[1].to_string(), "stages.vae.lr: 0.001 -> 0.002");
        assert_eq!(d[0].old, None);
        assert!(diff_values(&a, &a).is_empty());
    }

    #[test]
    fn training_relevance() {
        assert!(is_training_relevant("stages.vae.lr"));
        assert!(is_training_relevant("autoencoder.ch"));
        assert!(is_training_relevant("experiment.seed"));
        assert!(!is_training_relevant("logging.sample_every"));
        assert!(!is_training_relevant("stages.ldm.guidance"));
        assert!(!is_training_relevant("experiment.device"));
        assert!(!is_training_relevant("stages.vae.keep_checkpoints"));
        for sampling in [
            "spacing",
            "sigmas",
            "guidance_rescale",
            "sampler_sweep",
            "sample_seed",
        ] {
            assert!(!is_training_relevant(&format!("stages.ldm.{sampling}")));
        }
        assert!(is_training_relevant("stages.ldm.noise_offset"));
        assert!(is_training_relevant("stages.ldm.input_perturbation"));
        assert!(is_training_relevant("schedule.zero_terminal_snr"));
    }
}
