//! Stage fingerprints: a hash of everything that decides what a stage produces (its own
//! settings, the sections its networks and data come from, the seed, the data's identity and
//! the fingerprints of the stages it needs). Two stages with the same fingerprint produce the
//! same artifacts, so a finished one can stand in for the other.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::conditioning::ConditioningKind;
use crate::config::diff::is_training_relevant;
use crate::config::{Experiment, StageKind, StageSpec};
use crate::data::{DatasetName, files};

/// What identifies the training data: the files' content checksums, or the image folder.
fn data_identity(e: &Experiment) -> Value {
    let d = &e.dataset;
    let content = match files::known_files(d.name) {
        Some(set) => json!(set.all().iter().map(|f| f.md5).collect::<Vec<_>>()),
        None => json!(
            d.root
                .as_ref()
                .map(|r| r.canonicalize().unwrap_or_else(|_| r.clone()))
        ),
    };
    let channels = if d.name == DatasetName::ImageFolder {
        d.channels
    } else {
        1
    };
    json!({
        "name": d.name.as_str(),
        "content": content,
        "image_size": d.image_size,
        "channels": channels,
        "train_limit": d.train_limit,
    })
}

/// The stage's own keys that change what it produces.
fn own_settings(name: &str, spec: &StageSpec) -> Value {
    let kind = spec.kind();
    let Ok(Value::Object(all)) = serde_json::to_value(spec) else {
        return Value::Null;
    };
    let kept: serde_json::Map<String, Value> = all
        .into_iter()
        // Sampler settings of a training stage only change its preview grids, not its weights.
        .filter(|(k, _)| !kind.trains() || is_training_relevant(&format!("stages.{name}.{k}")))
        .collect();
    Value::Object(kept)
}

/// The content checksum of a file a stage reads its frozen weights from: the same path holding
/// other weights makes another stage.
fn file_identity(path: &std::path::Path) -> Value {
    match std::fs::read(path) {
        Ok(bytes) => {
            let digest = Sha256::digest(&bytes);
            json!(
                digest
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )
        }
        Err(e) => json!(format!("unreadable: {e}")),
    }
}

/// The LPIPS weights an autoencoder stage uses, if any.
fn lpips_identity(spec: &StageSpec) -> Option<Value> {
    match spec {
        StageSpec::Autoencoder(s) if s.loss.perceptual_weight > 0.0 => {
            s.loss.lpips_weights.as_deref().map(file_identity)
        }
        _ => None,
    }
}

/// Fingerprints of the stages `order` names (in execution order, so upstream ones exist).
pub fn fingerprints(e: &Experiment, order: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for name in order {
        let Some(stage) = e.stages.get(name) else {
            continue;
        };
        let kind = stage.spec.kind();
        let sections = match kind {
            StageKind::Autoencoder => {
                let mut v = json!({ "autoencoder": e.autoencoder, "data": data_identity(e) });
                if let Some(lpips) = lpips_identity(&stage.spec) {
                    v["lpips"] = lpips;
                }
                v
            }
            StageKind::Diffusion => {
                let mut v = json!({
                    "unet": e.unet, "schedule": e.schedule, "conditioning": e.conditioning, "data": data_identity(e),
                });
                let c = &e.conditioning;
                if let (ConditioningKind::Clip, Some(w), Some(t)) =
                    (c.kind, &c.clip_weights, &c.clip_tokenizer)
                {
                    v["clip"] = json!([file_identity(w), file_identity(t)]);
                }
                v
            }
            StageKind::Classifier => json!({ "data": data_identity(e) }),
            StageKind::Sample | StageKind::Eval => {
                json!({ "grid": e.logging.grid_size, "data": data_identity(e) })
            }
        };
        let upstream: Vec<&String> = stage.needs.iter().filter_map(|n| out.get(n)).collect();
        let doc = json!({
            "format": 2,
            "stage": name,
            "kind": kind.as_str(),
            "seed": e.experiment.seed,
            "settings": own_settings(name, &stage.spec),
            "sections": sections,
            "upstream": upstream,
        });
        let digest = Sha256::digest(doc.to_string().as_bytes());
        let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        out.insert(name.clone(), hex);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn prints(sets: &[&str]) -> BTreeMap<String, String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/smoke.toml");
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let r = config::resolve(&path, &Default::default(), &sets).unwrap();
        let order: Vec<String> = ["vae", "ldm", "sample", "clf", "eval"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        fingerprints(&r.experiment, &order)
    }

    #[test]
    fn only_what_a_stage_depends_on_changes_its_fingerprint() {
        let base = prints(&[]);
        let lr = prints(&["stages.ldm.lr=5e-4"]);
        assert_eq!(
            base["vae"], lr["vae"],
            "the autoencoder does not depend on the UNet's lr"
        );
        assert_ne!(base["ldm"], lr["ldm"]);
        assert_ne!(
            base["sample"], lr["sample"],
            "downstream of a changed stage"
        );
        let guidance = prints(&["stages.sample.guidance=5.0"]);
        assert_eq!(base["ldm"], guidance["ldm"]);
        assert_ne!(base["sample"], guidance["sample"]);
        let grids = prints(&["stages.ldm.guidance=5.0", "logging.log_every=7"]);
        assert_eq!(
            base["ldm"], grids["ldm"],
            "preview settings do not change the weights"
        );
        let seed = prints(&["experiment.seed=1"]);
        assert_ne!(base["vae"], seed["vae"]);
        let ae = prints(&["autoencoder.ch=32"]);
        assert_ne!(base["vae"], ae["vae"]);
        assert_ne!(base["ldm"], ae["ldm"], "through its upstream");
        assert_eq!(base, prints(&[]), "stable");
    }
}
