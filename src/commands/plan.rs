//! `ldm-run plan`: the resolved configuration, the stages in order with their state, and the
//! parameter count of every model. Runs nothing, writes nothing.

use std::fmt::Write;
use std::path::Path;

use candle_core::Device;

use crate::conditioning::Vocabulary;
use crate::config::schema::{DatasetName, Experiment};
use crate::config::{Resolved, StageSpec};
use crate::data::dataset::{FASHION_MNIST_CLASSES, MNIST_CLASSES};
use crate::models::autoencoder::AutoencoderKl;
use crate::models::classifier::Classifier;
use crate::models::discriminator::Discriminator;
use crate::nn::params::ParamStore;
use crate::plan::manifest::Status;
use crate::runs;
use crate::stages::trained;

/// `1234567` as `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The data set's class names, without loading its images.
pub fn class_names(e: &Experiment) -> anyhow::Result<Vec<String>> {
    Ok(match e.dataset.name {
        DatasetName::Mnist => MNIST_CLASSES.iter().map(|s| s.to_string()).collect(),
        DatasetName::FashionMnist => FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        DatasetName::ImageFolder => {
            let root = e.dataset.root.as_deref().unwrap_or(Path::new("."));
            crate::data::image_folder::class_names(root)?
        }
    })
}

/// Parameter counts per `<stage>.<model>`, in stage order.
pub fn parameter_counts(resolved: &Resolved) -> anyhow::Result<Vec<(String, usize)>> {
    let e = &resolved.experiment;
    let dev = Device::Cpu;
    let mut counts = Vec::new();
    for stage in &resolved.stages {
        match &stage.spec {
            StageSpec::Autoencoder { disc_weight, .. } => {
                let store = ParamStore::seeded(0, &dev);
                AutoencoderKl::new(
                    &e.autoencoder,
                    e.dataset.channels,
                    e.dataset.image_size,
                    store.vb(),
                )?;
                counts.push((format!("{}.autoencoder", stage.name), store.count()));
                if *disc_weight > 0.0 {
                    let store = ParamStore::seeded(0, &dev);
                    Discriminator::new(e.dataset.channels, store.vb())?;
                    counts.push((format!("{}.discriminator", stage.name), store.count()));
                }
            }
            StageSpec::Diffusion { .. } => {
                let vocab = Vocabulary::for_classes(&class_names(e)?, e.conditioning.max_tokens);
                let store = ParamStore::seeded(0, &dev);
                trained::denoiser(e, &vocab, &store)?;
                let sum = |prefix: &str| -> usize {
                    store
                        .tensors()
                        .iter()
                        .filter(|(k, _)| k.starts_with(prefix))
                        .map(|(_, t)| t.elem_count())
                        .sum()
                };
                counts.push((format!("{}.unet", stage.name), sum("unet.")));
                let cond = sum("cond.");
                if cond > 0 {
                    let model = match e.conditioning.kind {
                        crate::config::schema::ConditioningKind::Text => "text_encoder",
                        _ => "class_embedding",
                    };
                    counts.push((format!("{}.{model}", stage.name), cond));
                }
            }
            StageSpec::Classifier { .. } => {
                let store = ParamStore::seeded(0, &dev);
                Classifier::new(
                    e.dataset.channels,
                    e.dataset.image_size,
                    class_names(e)?.len(),
                    store.vb(),
                )?;
                counts.push((format!("{}.classifier", stage.name), store.count()));
            }
            StageSpec::Sample { .. } | StageSpec::Eval { .. } => {}
        }
    }
    Ok(counts)
}

/// The whole `plan` report.
pub fn report(resolved: &Resolved, runs_dir: &Path) -> anyhow::Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "# resolved configuration of {}",
        resolved.path.display()
    )?;
    out.push_str(&resolved.to_toml());
    let previous = runs::latest_matching(runs_dir, resolved);
    writeln!(out, "\n# stages, in execution order")?;
    match &previous {
        Some((dir, _)) => writeln!(
            out,
            "# (state from the latest run with this configuration: {})",
            dir.display()
        )?,
        None => writeln!(
            out,
            "# (no earlier run with this configuration under {})",
            runs_dir.display()
        )?,
    }
    let width = resolved
        .stages
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    for stage in &resolved.stages {
        let status = previous
            .as_ref()
            .and_then(|(_, m)| m.stages.get(&stage.name))
            .map_or("pending", |r| {
                if r.status == Status::Finished {
                    "done"
                } else {
                    "pending"
                }
            });
        let needs = if stage.needs.is_empty() {
            "-".to_string()
        } else {
            stage.needs.join(",")
        };
        writeln!(
            out,
            "stage {:width$}  {:11}  needs: {:10}  {status}",
            stage.name,
            stage.spec.kind().as_str(),
            needs
        )?;
    }
    if !resolved.experiment.sweep.is_empty() {
        let members = crate::config::sweep::members(&resolved.experiment.sweep)?;
        writeln!(
            out,
            "\n# sweep: {} members, each run as its own experiment",
            members.len()
        )?;
        for m in &members {
            let values: Vec<String> = m
                .overrides
                .iter()
                .map(|o| format!("{} = {}", o.key, o.value))
                .collect();
            writeln!(
                out,
                "member {}-{}  {}",
                resolved.experiment.experiment.name,
                m.suffix,
                values.join(", ")
            )?;
        }
    }
    writeln!(out)?;
    for (model, n) in parameter_counts(resolved)? {
        writeln!(out, "params {model}: {}", thousands(n))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(16_747_237), "16,747,237");
    }
}
