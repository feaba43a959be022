//! The checks of a resolved experiment, each naming the key and the layer it came from: every
//! settings type's own checks, and those that need two sections at once.

use super::error::{Problem, Problems};
use super::load::Layered;
use super::schema::Experiment;
use super::stage::{StageKind, StageSpec};
use crate::conditioning::ConditioningKind;

/// Longest experiment or stage name (the first is a folder name, with sweep suffixes).
pub const MAX_NAME: usize = 200;

/// Every resolution a network with `levels` levels sees, starting at `size`.
fn resolutions(size: usize, levels: usize) -> Vec<usize> {
    (0..levels).map(|i| size >> i).collect()
}

/// Checks the resolved `e`; problems name the keys as `layered` knows their sources.
pub fn check(e: &Experiment, layered: &Layered) -> Vec<Problem> {
    let mut c = Problems::new(layered);
    names(&mut c, e);
    c.table("dataset", e.dataset.check().into_vec());
    c.table("autoencoder", e.autoencoder.check().into_vec());
    c.table("unet", e.unet.check().into_vec());
    c.table("schedule", e.schedule.check().into_vec());
    c.table("conditioning", e.conditioning.check().into_vec());
    c.table("logging", e.logging.check().into_vec());
    for (name, stage) in &e.stages {
        c.table(&format!("stages.{name}"), stage.spec.check(&e.schedule));
    }
    if c.problems.is_empty() {
        let latent = autoencoder_against_image(&mut c, e);
        unet_against_latent(&mut c, e, latent);
        conditioning_against_unet(&mut c, e);
        stages_against_data(&mut c, e);
    }
    c.problems
}

fn names(c: &mut Problems, e: &Experiment) {
    let name = &e.experiment.name;
    let safe = |ch: char| ch.is_ascii_alphanumeric() || "-_.".contains(ch);
    if name.is_empty() || !name.chars().all(safe) || name.starts_with('.') {
        c.fail(
            "experiment.name",
            format!(
                "`{name}` cannot name a run folder; use letters, digits, '-', '_' and '.' only \
                 (not first)"
            ),
        );
    } else if name.len() > MAX_NAME {
        c.fail(
            "experiment.name",
            format!(
                "is {} characters long; at most {MAX_NAME} fit a folder name",
                name.len()
            ),
        );
    } else if name == crate::slurm::SLURM_DIR {
        c.fail(
            "experiment.name",
            format!(
                "`{name}` is the runs folder's own folder of Slurm job scripts; choose another name"
            ),
        );
    }
}

/// Checks `[autoencoder]` against the image and returns the latent side, if consistent.
fn autoencoder_against_image(c: &mut Problems, e: &Experiment) -> Option<usize> {
    let a = &e.autoencoder;
    let size = e.dataset.image_size;
    let halvings = a.halvings();
    let factor = 1usize << halvings;
    if !size.is_multiple_of(factor) {
        let key = c.blame(&["autoencoder.ch_mult", "dataset.image_size"]);
        c.fail(
            key,
            format!(
                "{} levels halve the image {halvings} times, but dataset.image_size {size} is \
                 not divisible by {factor}",
                halvings + 1
            ),
        );
        return None;
    }
    let reachable = resolutions(size, halvings + 1);
    for r in &a.attn_resolutions {
        if !reachable.contains(r) {
            c.fail(
                "autoencoder.attn_resolutions",
                format!("resolution {r} is never reached; the encoder sees {reachable:?}"),
            );
        }
    }
    Some(a.latent_shape(size).side)
}

fn unet_against_latent(c: &mut Problems, e: &Experiment, latent: Option<usize>) {
    let u = &e.unet;
    if let Some(wanted) = u.latent_channels
        && wanted != e.autoencoder.embed_dim
    {
        c.fail(
            "unet.latent_channels",
            format!(
                "{wanted} does not match the autoencoder's latent channels \
                 (autoencoder.embed_dim = {})",
                e.autoencoder.embed_dim
            ),
        );
    }
    let Some(latent) = latent else { return };
    if let Some(wanted) = u.latent_size
        && wanted != latent
    {
        c.fail(
            "unet.latent_size",
            format!(
                "{wanted} does not match the autoencoder's latent side {latent} \
                 (dataset.image_size {} halved {} times by autoencoder.ch_mult)",
                e.dataset.image_size,
                e.autoencoder.halvings()
            ),
        );
    }
    let factor = 1usize << u.halvings();
    if !latent.is_multiple_of(factor) {
        c.fail(
            "unet.channel_mult",
            format!(
                "{} levels need a latent side divisible by {factor}, but the autoencoder's \
                 latent side is {latent}",
                u.halvings() + 1
            ),
        );
        return;
    }
    let reachable = resolutions(latent, u.halvings() + 1);
    for r in &u.attention_resolutions {
        if !reachable.contains(r) {
            c.fail(
                "unet.attention_resolutions",
                format!("resolution {r} is never reached; the UNet sees {reachable:?}"),
            );
        }
    }
}

fn conditioning_against_unet(c: &mut Problems, e: &Experiment) {
    let k = &e.conditioning;
    if k.kind != ConditioningKind::Text {
        return;
    }
    let width = k.width.unwrap_or(e.unet.context_dim);
    if width != e.unet.context_dim {
        c.fail(
            "conditioning.width",
            format!(
                "the text encoder's width {width} does not match unet.context_dim {}; the \
                 UNet's cross-attention reads the encoder's output, so they must be equal",
                e.unet.context_dim
            ),
        );
    }
    if !width.is_multiple_of(k.heads) {
        let key = c.blame(&["conditioning.heads", "unet.context_dim"]);
        c.fail(
            key,
            format!(
                "{} heads do not divide the text encoder width {width} (unet.context_dim)",
                k.heads
            ),
        );
    }
}

fn stages_against_data(c: &mut Problems, e: &Experiment) {
    for (name, stage) in &e.stages {
        if stage.spec.kind() == StageKind::Classifier && !e.dataset.image_size.is_multiple_of(4) {
            c.fail(
                "dataset.image_size",
                format!(
                    "{} is not a multiple of 4: the classifier of stage `{name}` pools twice by 2",
                    e.dataset.image_size
                ),
            );
        }
        if let StageSpec::Autoencoder(s) = &stage.spec
            && s.train.steps > 0
            && s.loss.disc_start >= s.train.steps
            && s.loss.disc_weight > 0.0
        {
            c.fail(
                &format!("stages.{name}.disc_start"),
                format!(
                    "the discriminator would start at step {} of a {}-step stage, so it never \
                     trains; lower disc_start or set disc_weight = 0",
                    s.loss.disc_start, s.train.steps
                ),
            );
        }
    }
}
