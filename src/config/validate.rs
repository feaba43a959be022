//! Range and consistency checks of a layered experiment, each naming the key and its source.

use super::error::Problem;
use super::load::Layered;
use super::schema::{BetaSchedule, ConditioningKind, DatasetName, Experiment, StageKind};

/// Collects problems, naming the source of each key through the layered figment.
struct Checker<'a> {
    layered: &'a Layered,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn fail(&mut self, key: &str, message: String) {
        self.problems.push(Problem {
            source: self.layered.source_of(key),
            key: key.to_string(),
            message,
        });
    }

    fn positive(&mut self, key: &str, value: usize) {
        if value == 0 {
            self.fail(key, "must be at least 1".into());
        }
    }

    fn all_positive(&mut self, key: &str, values: &[usize]) {
        if values.is_empty() {
            self.fail(key, "must list at least one value".into());
        } else if values.contains(&0) {
            self.fail(
                key,
                format!("{values:?} contains 0; every entry must be at least 1"),
            );
        }
    }

    fn probability(&mut self, key: &str, value: f64) {
        if !(0.0..1.0).contains(&value) {
            self.fail(
                key,
                format!("{value} is out of range; expected 0 <= value < 1"),
            );
        }
    }

    /// Every width must split into `groups` GroupNorm groups; the problem is the groups key's.
    fn divisible(&mut self, widths: &[usize], widths_from: &str, groups: usize, groups_key: &str) {
        if groups == 0 {
            return;
        }
        let bad: Vec<usize> = widths
            .iter()
            .copied()
            .filter(|w| !w.is_multiple_of(groups))
            .collect();
        if !bad.is_empty() {
            self.fail(
                groups_key,
                format!(
                    "GroupNorm cannot split the channel widths {bad:?} ({widths_from}) into {groups} \
                     groups; use a group count that divides every width (e.g. 32 with widths that \
                     are multiples of 32)"
                ),
            );
        }
    }
}

/// Every resolution a network with `levels` levels sees, starting at `size`.
fn resolutions(size: usize, levels: usize) -> Vec<usize> {
    (0..levels).map(|i| size >> i).collect()
}

/// Checks everything that can be checked without touching the disk.
pub fn check(layered: &Layered) -> Vec<Problem> {
    let mut c = Checker {
        layered,
        problems: Vec::new(),
    };
    let e: &Experiment = &layered.experiment;
    experiment_section(&mut c, e);
    let latent = autoencoder_section(&mut c, e);
    unet_section(&mut c, e, latent);
    schedule_section(&mut c, e);
    conditioning_section(&mut c, e);
    stages_section(&mut c, e);
    let log = &e.logging;
    c.positive("logging.log_every", log.log_every);
    c.positive("logging.sample_every", log.sample_every);
    c.positive("logging.grid_size", log.grid_size);
    c.problems
}

fn experiment_section(c: &mut Checker, e: &Experiment) {
    let name = &e.experiment.name;
    let safe = |ch: char| ch.is_ascii_alphanumeric() || "-_.".contains(ch);
    if name.is_empty() || !name.chars().all(safe) || name.starts_with('.') {
        c.fail(
            "experiment.name",
            format!(
                "`{name}` cannot name a run folder; use letters, digits, '-', '_' and '.' only"
            ),
        );
    }
    if let Err(why) = crate::device::parse(&e.experiment.device) {
        c.fail("experiment.device", why);
    }
    let d = &e.dataset;
    c.positive("dataset.image_size", d.image_size);
    match d.name {
        DatasetName::Mnist | DatasetName::FashionMnist if d.channels != 1 => c.fail(
            "dataset.channels",
            format!(
                "{} images have 1 channel, not {}",
                d.name.as_str(),
                d.channels
            ),
        ),
        _ if d.channels != 1 && d.channels != 3 => c.fail(
            "dataset.channels",
            format!(
                "{} is not supported; expected 1 (grey) or 3 (RGB)",
                d.channels
            ),
        ),
        _ => {}
    }
}

/// Checks `[autoencoder]` and returns the latent side it produces, if it is consistent.
fn autoencoder_section(c: &mut Checker, e: &Experiment) -> Option<usize> {
    let a = &e.autoencoder;
    c.positive("autoencoder.ch", a.ch);
    c.all_positive("autoencoder.ch_mult", &a.ch_mult);
    c.positive("autoencoder.z_channels", a.z_channels);
    c.positive("autoencoder.embed_dim", a.embed_dim);
    c.positive("autoencoder.norm_groups", a.norm_groups);
    c.probability("autoencoder.dropout", a.dropout);
    let widths: Vec<usize> = a.ch_mult.iter().map(|m| a.ch * m).collect();
    c.divisible(
        &widths,
        "autoencoder.ch x autoencoder.ch_mult",
        a.norm_groups,
        "autoencoder.norm_groups",
    );
    let levels = a.ch_mult.len().max(1);
    let size = e.dataset.image_size;
    let factor = 1usize << (levels - 1);
    if size == 0 || !size.is_multiple_of(factor) {
        c.fail(
            "autoencoder.ch_mult",
            format!(
                "{} levels halve the image {} times, but dataset.image_size {size} is not divisible by {factor}",
                levels,
                levels - 1
            ),
        );
        return None;
    }
    let reachable = resolutions(size, levels);
    for r in &a.attn_resolutions {
        if !reachable.contains(r) {
            c.fail(
                "autoencoder.attn_resolutions",
                format!("resolution {r} is never reached; the encoder sees {reachable:?}"),
            );
        }
    }
    Some(size / factor)
}

fn unet_section(c: &mut Checker, e: &Experiment, latent: Option<usize>) {
    let u = &e.unet;
    c.positive("unet.model_channels", u.model_channels);
    c.all_positive("unet.channel_mult", &u.channel_mult);
    c.positive("unet.num_heads", u.num_heads);
    c.positive("unet.head_channels", u.head_channels);
    c.positive("unet.context_dim", u.context_dim);
    c.positive("unet.norm_groups", u.norm_groups);
    c.probability("unet.dropout", u.dropout);
    if !u.model_channels.is_multiple_of(2) {
        c.fail(
            "unet.model_channels",
            format!(
                "{} is odd; the sinusoidal time embedding needs an even width",
                u.model_channels
            ),
        );
    }
    let widths: Vec<usize> = u
        .channel_mult
        .iter()
        .map(|m| u.model_channels * m)
        .collect();
    c.divisible(
        &widths,
        "unet.model_channels x unet.channel_mult",
        u.norm_groups,
        "unet.norm_groups",
    );
    if let Some(wanted) = u.latent_channels
        && wanted != e.autoencoder.embed_dim
    {
        c.fail(
                "unet.latent_channels",
                format!(
                    "{wanted} does not match the autoencoder's latent channels (autoencoder.embed_dim = {})",
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
                e.autoencoder.ch_mult.len().saturating_sub(1)
            ),
        );
    }
    let levels = u.channel_mult.len().max(1);
    let factor = 1usize << (levels - 1);
    if latent % factor != 0 {
        c.fail(
            "unet.channel_mult",
            format!(
                "{levels} levels need a latent side divisible by {factor}, but the autoencoder's latent side is {latent}"
            ),
        );
        return;
    }
    let reachable = resolutions(latent, levels);
    for r in &u.attention_resolutions {
        if !reachable.contains(r) {
            c.fail(
                "unet.attention_resolutions",
                format!("resolution {r} is never reached; the UNet sees {reachable:?}"),
            );
        }
    }
}

fn schedule_section(c: &mut Checker, e: &Experiment) {
    let s = &e.schedule;
    c.positive("schedule.timesteps", s.timesteps);
    if s.kind != BetaSchedule::Cosine
        && !(0.0 < s.beta_start && s.beta_start < s.beta_end && s.beta_end < 1.0)
    {
        c.fail(
            "schedule.beta_end",
            format!(
                "betas {}..{} are out of range; expected 0 < beta_start < beta_end < 1",
                s.beta_start, s.beta_end
            ),
        );
    }
    for (key, value) in [
        ("schedule.scale_factor", s.scale_factor),
        ("schedule.min_snr_gamma", s.min_snr_gamma),
    ] {
        if let Some(f) = value
            && !(f.is_finite() && f > 0.0)
        {
            c.fail(key, format!("{f} must be a positive number"));
        }
    }
}

fn conditioning_section(c: &mut Checker, e: &Experiment) {
    let k = &e.conditioning;
    c.probability("conditioning.context_dropout", k.context_dropout);
    if k.kind == ConditioningKind::Clip {
        for (key, value) in [
            ("conditioning.clip_weights", &k.clip_weights),
            ("conditioning.clip_tokenizer", &k.clip_tokenizer),
        ] {
            if value.is_none() {
                c.fail(
                    key,
                    "conditioning.kind = \"clip\" needs it: a local file (see README)".into(),
                );
            }
        }
    }
    if k.kind != ConditioningKind::Text {
        return;
    }
    c.positive("conditioning.layers", k.layers);
    c.positive("conditioning.heads", k.heads);
    c.positive("conditioning.max_tokens", k.max_tokens);
    let width = k.width.unwrap_or(e.unet.context_dim);
    if width != e.unet.context_dim {
        c.fail(
            "conditioning.width",
            format!(
                "the text encoder's width {width} does not match unet.context_dim {}; \
                 the UNet's cross-attention reads the encoder's output, so they must be equal",
                e.unet.context_dim
            ),
        );
    }
    if k.heads > 0 && !width.is_multiple_of(k.heads) {
        c.fail(
            "conditioning.heads",
            format!(
                "{} heads do not divide the text encoder width {width}",
                k.heads
            ),
        );
    }
}

fn stages_section(c: &mut Checker, e: &Experiment) {
    if e.stages.is_empty() {
        c.fail(
            "stages",
            "no stages: add at least one [stages.<name>] table".into(),
        );
    }
    for (name, stage) in &e.stages {
        let key = |k: &str| format!("stages.{name}.{k}");
        let safe = name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch));
        if !safe {
            c.fail(
                &format!("stages.{name}"),
                "stage names may use letters, digits, '-' and '_' only".into(),
            );
        }
        if stage.perceptual_weight.is_some_and(|w| w > 0.0) && stage.lpips_weights.is_none() {
            c.fail(
                &key("perceptual_weight"),
                format!(
                    "a perceptual term needs LPIPS weights: set stages.{name}.lpips_weights to a \
                     local safetensors file (see README), or perceptual_weight = 0"
                ),
            );
        }
        for (k, v) in [
            ("steps", stage.steps),
            ("batch_size", stage.batch_size),
            ("checkpoint_every", stage.checkpoint_every),
            ("keep_checkpoints", stage.keep_checkpoints),
            ("sampler_steps", stage.sampler_steps),
            ("samples", stage.samples),
        ] {
            if v == Some(0) {
                c.fail(&key(k), "must be at least 1".into());
            }
        }
        if let Some(lr) = stage.lr
            && !(lr.is_finite() && lr > 0.0)
        {
            c.fail(&key("lr"), format!("{lr} must be a positive number"));
        }
        if let Some([b1, b2]) = stage.betas {
            c.probability(&key("betas"), b1);
            c.probability(&key("betas"), b2);
        }
        for (k, v) in [
            ("weight_decay", stage.weight_decay),
            ("grad_clip", stage.grad_clip),
            ("kl_weight", stage.kl_weight),
            ("disc_weight", stage.disc_weight),
            ("perceptual_weight", stage.perceptual_weight),
            ("eta", stage.eta),
            ("guidance", stage.guidance),
        ] {
            if let Some(v) = v
                && !(v.is_finite() && v >= 0.0)
            {
                c.fail(&key(k), format!("{v} must be zero or positive"));
            }
        }
        for g in stage.guidance_sweep.iter().flatten() {
            if !(g.is_finite() && *g >= 0.0) {
                c.fail(
                    &key("guidance_sweep"),
                    format!("{g} must be zero or positive"),
                );
            }
        }
        if stage.kind == StageKind::Classifier && !e.dataset.image_size.is_multiple_of(4) {
            c.fail(
                "dataset.image_size",
                format!(
                    "{} is not a multiple of 4: the classifier of stage `{name}` pools twice by 2",
                    e.dataset.image_size
                ),
            );
        }
        if stage.kind == StageKind::Eval && stage.samples == Some(1) {
            c.fail(
                &key("samples"),
                "must be at least 2: the Frechet distance needs the samples' covariance".into(),
            );
        }
        if let Some(d) = stage.ema_decay {
            c.probability(&key("ema_decay"), d);
        }
        if let Some(n) = stage.sampler_steps
            && stage.kind != StageKind::Autoencoder
            && n > e.schedule.timesteps
        {
            c.fail(
                &key("sampler_steps"),
                format!(
                    "{n} is more than schedule.timesteps ({})",
                    e.schedule.timesteps
                ),
            );
        }
    }
}
