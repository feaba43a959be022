//! What a run shows in TensorBoard's HParams table: its main settings (and every swept key) as
//! hyperparameters, and the final metrics of its stages as the metric columns.

use crate::config::Resolved;
use crate::config::schema::StageKind;
use crate::log::HParamValue;

/// Scalar hyperparameters of a run; lists become strings.
pub fn values(resolved: &Resolved) -> Vec<(String, HParamValue)> {
    let e = &resolved.experiment;
    let list = |v: &[usize]| format!("{v:?}");
    let mut out: Vec<(String, HParamValue)> = vec![
        ("experiment".into(), e.experiment.name.clone().into()),
        ("experiment.seed".into(), e.experiment.seed.into()),
        ("dataset.name".into(), e.dataset.name.as_str().into()),
        ("dataset.train_limit".into(), e.dataset.train_limit.into()),
        ("autoencoder.ch".into(), e.autoencoder.ch.into()),
        (
            "autoencoder.ch_mult".into(),
            list(&e.autoencoder.ch_mult).into(),
        ),
        ("unet.model_channels".into(), e.unet.model_channels.into()),
        (
            "unet.channel_mult".into(),
            list(&e.unet.channel_mult).into(),
        ),
        (
            "unet.attention_resolutions".into(),
            list(&e.unet.attention_resolutions).into(),
        ),
        (
            "schedule.kind".into(),
            format!("{:?}", e.schedule.kind).to_lowercase().into(),
        ),
        (
            "schedule.prediction".into(),
            format!("{:?}", e.schedule.prediction).to_lowercase().into(),
        ),
        (
            "conditioning.kind".into(),
            format!("{:?}", e.conditioning.kind).to_lowercase().into(),
        ),
    ];
    for (name, s) in &e.stages {
        let key = |k: &str| format!("stages.{name}.{k}");
        let numbers = [
            ("steps", s.steps.map(|v| v as f64)),
            ("batch_size", s.batch_size.map(|v| v as f64)),
            ("lr", s.lr),
            ("ema_decay", s.ema_decay),
            ("kl_weight", s.kl_weight),
            ("guidance", s.guidance),
            ("sampler_steps", s.sampler_steps.map(|v| v as f64)),
        ];
        out.extend(
            numbers
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (key(k), v.into()))),
        );
        if let Some(sampler) = s.sampler {
            out.push((key("sampler"), format!("{sampler:?}").to_lowercase().into()));
        }
    }
    out
}

/// The scalar tags whose final values are the run's metrics.
pub fn metrics(resolved: &Resolved) -> Vec<String> {
    let mut out = Vec::new();
    for stage in &resolved.stages {
        let tags: &[&str] = match stage.spec.kind() {
            StageKind::Autoencoder => &["test/psnr", "loss/rec"],
            StageKind::Diffusion => &["loss/mse"],
            StageKind::Classifier => &["test/accuracy"],
            StageKind::Eval => &["accuracy", "frechet", "psnr", "ssim"],
            StageKind::Sample => &[],
        };
        out.extend(tags.iter().map(|t| format!("{}/{t}", stage.name)));
    }
    out
}
