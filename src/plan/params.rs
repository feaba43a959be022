//! Parameter counts of the networks each stage trains, counted by building them over a
//! shapes-only parameter store: no weight is allocated, so any size can be counted (and
//! refused by the memory estimate) before a run starts.

use crate::conditioning::{Conditioner, ConditioningKind, PromptTokenizer};
use crate::config::Experiment;
use crate::models::autoencoder::AutoencoderKl;
use crate::models::classifier::Classifier;
use crate::models::discriminator::Discriminator;
use crate::models::unet::UNet;
use crate::nn::params::ParamStore;

use super::task::Task;

/// Parameters of whatever `build` creates in a fresh shapes-only store (0 if it cannot be
/// built: the configuration's checks say why).
fn count(build: impl FnOnce(&ParamStore) -> anyhow::Result<()>) -> usize {
    let store = ParamStore::shapes_only();
    build(&store).map_or(0, |()| store.count())
}

/// `(model, parameters)` of the networks a stage trains, e.g. `("unet", 2_960_128)`; the
/// conditioning network is counted for the planned `tokenizer` (left out without one).
pub fn trained(
    e: &Experiment,
    task: &Task,
    classes: &[String],
    tokenizer: Option<&PromptTokenizer>,
) -> Vec<(&'static str, usize)> {
    let d = &e.dataset;
    match task {
        Task::Autoencoder(s) => {
            let mut out = vec![("autoencoder", autoencoder(e))];
            if s.loss.disc_weight > 0.0 {
                out.push((
                    "discriminator",
                    count(|st| Ok(Discriminator::new(d.channels, st.vb()).map(|_| ())?)),
                ));
            }
            out
        }
        Task::Diffusion { .. } => {
            let mut out = vec![("unet", unet(e))];
            let cond = count(|st| {
                if let Some(t) = tokenizer
                    && e.conditioning.kind != ConditioningKind::Clip
                {
                    Conditioner::new(&e.conditioning, t, e.unet.context_dim, st.vb())?;
                }
                Ok(())
            });
            if cond > 0 {
                let model = match e.conditioning.kind {
                    ConditioningKind::Text => "text_encoder",
                    _ => "class_embedding",
                };
                out.push((model, cond));
            }
            out
        }
        Task::Classifier(_) => vec![("classifier", classifier(e, classes))],
        Task::Sample { .. } | Task::Eval { .. } => Vec::new(),
    }
}

/// The autoencoder's parameters.
pub fn autoencoder(e: &Experiment) -> usize {
    let d = &e.dataset;
    count(|st| {
        Ok(AutoencoderKl::new(&e.autoencoder, d.channels, d.image_size, st.vb()).map(|_| ())?)
    })
}

/// The classifier's parameters for `classes`.
pub fn classifier(e: &Experiment, classes: &[String]) -> usize {
    let d = &e.dataset;
    count(|st| Ok(Classifier::new(d.channels, d.image_size, classes.len(), st.vb()).map(|_| ())?))
}

/// The UNet's parameters.
pub fn unet(e: &Experiment) -> usize {
    count(|st| Ok(UNet::new(&e.unet, e.unet_shape(), st.vb()).map(|_| ())?))
}

/// Parameters a stage trains, and those it holds frozen (the autoencoder a diffusion stage
/// encodes with, the networks a sampling stage loads, the classifier that judges samples, a
/// CLIP tower of `clip` parameters).
pub fn held(
    e: &Experiment,
    task: &Task,
    classes: &[String],
    tokenizer: Option<&PromptTokenizer>,
    clip: usize,
) -> (usize, usize) {
    let trains: usize = trained(e, task, classes, tokenizer)
        .iter()
        .map(|(_, n)| n)
        .sum();
    let frozen = match task {
        Task::Sample { .. } => autoencoder(e) + unet(e) + clip,
        Task::Eval { .. } => autoencoder(e) + unet(e) + clip + classifier(e, classes),
        Task::Diffusion { judge, .. } => {
            autoencoder(e) + clip + judge.as_ref().map_or(0, |_| classifier(e, classes))
        }
        Task::Autoencoder(_) | Task::Classifier(_) => 0,
    };
    (trains, frozen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::task;

    /// The frozen parameters of stage `name` of the smoke experiment with `sets`, and its
    /// classifier's parameters.
    fn frozen(name: &str, sets: &[&str]) -> (usize, usize) {
        let r = crate::config::smoke(sets);
        let e = &r.experiment;
        let classes: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        let t = task::of(name, &e.stages).unwrap();
        (held(e, &t, &classes, None, 0).1, classifier(e, &classes))
    }

    #[test]
    fn the_judging_classifier_is_held_frozen() {
        let (plain, clf) = frozen("ldm", &[]);
        let (judged, _) = frozen(
            "ldm",
            &[
                "stages.ldm.eval_every=10",
                "stages.ldm.needs=[\"vae\", \"clf\"]",
            ],
        );
        assert!(clf > 0);
        assert_eq!(judged, plain + clf);
        let (sample, _) = frozen("sample", &[]);
        let (eval, _) = frozen("eval", &[]);
        assert_eq!(eval, sample + clf, "an eval stage loads the classifier too");
    }
}
