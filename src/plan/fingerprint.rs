//! Stage fingerprints: a hash of everything that decides what a stage produces (its own
//! settings, the sections its networks and data come from, the seed, the data's identity and
//! the fingerprints of the stages it needs). Two stages with the same fingerprint produce the
//! same artifacts, so a finished one can stand in for the other.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::conditioning::{ConditioningKind, TokenizerKind};
use crate::config::diff::is_training_relevant;
use crate::config::{Experiment, StageKind, StageSpec};
use crate::data::{DatasetName, Split, cifar10, files, metadata};

/// What identifies the training data: the files' content checksums (the CIFAR-10 archive's),
/// or the image folder, and for a captioned folder its metadata files' content and the columns
/// read from them. Keys that did not exist before captioned folders and CIFAR-10 are left out
/// when unused, so the fingerprints of earlier runs stay what they were.
fn data_identity(e: &Experiment) -> Value {
    let d = &e.dataset;
    let content = match (files::known_files(d.name), d.name) {
        (Some(set), _) => json!(set.all().iter().map(|f| f.md5).collect::<Vec<_>>()),
        (None, DatasetName::Cifar10) => json!(cifar10::ARCHIVE_MD5),
        (None, _) => json!(
            d.root
                .as_ref()
                .map(|r| r.canonicalize().unwrap_or_else(|_| r.clone()))
        ),
    };
    let channels = match d.name {
        DatasetName::ImageFolder | DatasetName::Cifar10 => d.channels,
        DatasetName::Mnist | DatasetName::FashionMnist => 1,
    };
    let mut v = json!({
        "name": d.name.as_str(),
        "content": content,
        "image_size": d.image_size,
        "channels": channels,
        "train_limit": d.train_limit,
    });
    if let Some(root) = d
        .root
        .as_ref()
        .filter(|_| d.name == DatasetName::ImageFolder)
    {
        let metadata: Vec<Value> = [Split::Train, Split::Test]
            .iter()
            .filter_map(|s| metadata::find(&root.join(s.as_str())).ok().flatten())
            .map(|p| file_identity(&p))
            .collect();
        if !metadata.is_empty() {
            v["metadata"] = json!(metadata);
            v["columns"] = json!([d.caption_column, d.label_column]);
        }
    }
    v
}

/// How training images are augmented, for the stages that augment them (nothing when off).
fn augmentation(e: &Experiment, v: &mut Value) {
    if e.dataset.flip {
        v["flip"] = json!(true);
    }
}

/// `[conditioning]` as it shapes the weights; the tokenizer is left out at its default (see
/// [`data_identity`]).
fn conditioning(e: &Experiment) -> Value {
    let mut v = json!(e.conditioning);
    if e.conditioning.tokenizer == TokenizerKind::Classes
        && let Some(map) = v.as_object_mut()
    {
        map.remove("tokenizer");
    }
    v
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
                augmentation(e, &mut v);
                v
            }
            StageKind::Diffusion => {
                let mut v = json!({
                    "unet": e.unet, "schedule": e.schedule, "conditioning": conditioning(e), "data": data_identity(e),
                });
                augmentation(e, &mut v);
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
        let r = config::smoke(sets);
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
        let flip = prints(&["dataset.name=\"fashion_mnist\"", "dataset.flip=true"]);
        let fashion = prints(&["dataset.name=\"fashion_mnist\""]);
        assert_ne!(fashion["vae"], flip["vae"], "flips change what is trained");
        assert_ne!(fashion["ldm"], flip["ldm"]);
        assert_eq!(fashion["clf"], flip["clf"], "the classifier does not flip");
        let bpe = prints(&["conditioning.tokenizer=\"bpe\""]);
        assert_eq!(base["vae"], bpe["vae"]);
        assert_ne!(
            base["ldm"], bpe["ldm"],
            "the tokenizer shapes the text encoder"
        );
        let seed = prints(&["experiment.seed=1"]);
        assert_ne!(base["vae"], seed["vae"]);
        let ae = prints(&["autoencoder.ch=32"]);
        assert_ne!(base["vae"], ae["vae"]);
        assert_ne!(base["ldm"], ae["ldm"], "through its upstream");
        assert_eq!(base, prints(&[]), "stable");
    }
}
