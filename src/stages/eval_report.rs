//! What the eval stage measured, and its three readings: `metrics.json`, the flat metrics of
//! the manifest and TensorBoard, and a markdown summary.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::diffusion::samplers::{SamplerSettings, SweepEntry};
use crate::metrics::accuracy::ClassAccuracy;

/// The settings a measurement was made with.
#[derive(Debug, Clone, Serialize)]
pub struct EvalSettings {
    pub seed: u64,
    /// The seed of the prompts and starting noise (`sample_seed`, else `seed`).
    pub sample_seed: u64,
    #[serde(flatten)]
    pub sampling: SamplerSettings,
    pub samples: usize,
    pub guidance_sweep: Vec<f64>,
    pub sampler_sweep: Vec<SweepEntry>,
    pub eval_images: usize,
}

/// What one set of samples scored and cost.
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Fraction of samples the classifier labels as their prompt's class; `None` for an
    /// unconditional model.
    pub accuracy: Option<f64>,
    /// Frechet distance between the samples' and the test split's classifier features.
    pub frechet: f64,
    /// Kernel Inception Distance in the same feature space (mean over subsets) and its
    /// standard deviation over the subsets.
    pub kid: f64,
    pub kid_std: f64,
    /// Network evaluations per sample (a guided evaluation runs both halves as one batch).
    pub nfe: usize,
    /// Wall-clock seconds of sampling and decoding per 1000 samples (not judging them).
    pub seconds_per_1000: f64,
}

/// Sample quality at one guidance scale.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleResult {
    pub guidance: f64,
    #[serde(flatten)]
    pub measured: Measured,
}

/// Sample quality with one entry of `sampler_sweep`, at the stage's guidance.
#[derive(Debug, Clone, Serialize)]
pub struct SamplerResult {
    /// The entry's name in the flat metrics (`sampler_<key>/...`).
    pub key: String,
    #[serde(flatten)]
    pub entry: SweepEntry,
    #[serde(flatten)]
    pub measured: Measured,
}

/// Everything the eval stage reports (written as `metrics.json`).
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub stage: String,
    pub diffusion_stage: String,
    pub classifier_stage: String,
    pub autoencoder_stage: String,
    pub settings: EvalSettings,
    pub conditional: bool,
    /// At `settings.guidance`.
    pub accuracy: Option<f64>,
    /// At `settings.guidance`: each class's share of samples labelled as prompted.
    pub per_class: Vec<ClassAccuracy>,
    /// At `settings.guidance`, against all `reference_images` test images.
    pub frechet: f64,
    /// At `settings.guidance`: KID against the test images, and its spread over subsets.
    pub kid: f64,
    pub kid_std: f64,
    /// Network evaluations per sample at the stage's sampler settings.
    pub nfe: usize,
    /// Seconds of sampling and decoding per 1000 samples at the stage's sampler settings.
    pub seconds_per_1000: f64,
    /// `real_images` test images against the other `rest_images`: the distance two sets of
    /// real digits of these sizes have, the floor `frechet` can reach.
    pub frechet_real: f64,
    /// The same `real_images` after an autoencoder round trip (decoded posterior means)
    /// against the other `rest_images`: the floor the autoencoder leaves `frechet`.
    pub frechet_autoencoder: f64,
    /// KID of the same two comparisons.
    pub kid_real: f64,
    pub kid_autoencoder: f64,
    pub reference_images: usize,
    pub real_images: usize,
    pub rest_images: usize,
    /// Reconstruction quality of the autoencoder on `reconstruction_images` test images.
    pub psnr: f64,
    pub ssim: f64,
    pub reconstruction_images: usize,
    /// Every scale measured: `settings.guidance` first, then `settings.guidance_sweep`.
    pub scales: Vec<ScaleResult>,
    /// Every entry of `settings.sampler_sweep`, in its order.
    pub samplers: Vec<SamplerResult>,
}

/// The key prefix of the results at guidance `scale`: `guidance_3`, `guidance_1.5`.
pub fn scale_key(scale: f64) -> String {
    format!("guidance_{scale}")
}

/// The key prefix of the results of a sampler sweep entry: `sampler_dpmpp_2m_10_karras`.
pub fn sampler_key(entry: &SweepEntry) -> String {
    format!("sampler_{}", entry.key())
}

impl EvalReport {
    /// The numbers as flat `name -> value` pairs: the manifest's metrics, and (prefixed by the
    /// stage) the TensorBoard tags.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::from([
            ("frechet".to_string(), self.frechet),
            ("frechet_real".to_string(), self.frechet_real),
            ("frechet_autoencoder".to_string(), self.frechet_autoencoder),
            ("kid".to_string(), self.kid),
            ("kid_std".to_string(), self.kid_std),
            ("kid_real".to_string(), self.kid_real),
            ("kid_autoencoder".to_string(), self.kid_autoencoder),
            ("nfe".to_string(), self.nfe as f64),
            ("seconds_per_1000".to_string(), self.seconds_per_1000),
            ("psnr".to_string(), self.psnr),
            ("ssim".to_string(), self.ssim),
        ]);
        if let Some(a) = self.accuracy {
            m.insert("accuracy".to_string(), a);
        }
        for row in &self.per_class {
            if let Some(a) = row.accuracy {
                m.insert(format!("class_{}/accuracy", row.class), a);
            }
        }
        for s in &self.scales {
            let key = scale_key(s.guidance);
            if let Some(a) = s.measured.accuracy {
                m.insert(format!("{key}/accuracy"), a);
            }
            m.insert(format!("{key}/frechet"), s.measured.frechet);
            m.insert(format!("{key}/kid"), s.measured.kid);
        }
        for s in &self.samplers {
            let key = &s.key;
            let r = &s.measured;
            if let Some(a) = r.accuracy {
                m.insert(format!("{key}/accuracy"), a);
            }
            m.insert(format!("{key}/frechet"), r.frechet);
            m.insert(format!("{key}/kid"), r.kid);
            m.insert(format!("{key}/nfe"), r.nfe as f64);
            m.insert(format!("{key}/seconds_per_1000"), r.seconds_per_1000);
        }
        m
    }

    /// A markdown summary: the headline numbers, the per-class table, the per-scale table.
    pub fn markdown(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |a| format!("{:.1}%", 100.0 * a));
        let main = &s.sampling;
        let _ = writeln!(
            out,
            "{} samples of `{}` ({} {} steps, {} network evaluations each, eta {}, guidance {}, \
             seed {}), judged by `{}`\n",
            s.samples,
            self.diffusion_stage,
            main.sampler.as_str(),
            main.sampler_steps,
            self.nfe,
            main.eta,
            main.guidance,
            s.sample_seed,
            self.classifier_stage
        );
        let _ = writeln!(out, "| metric | value |\n|---|---|");
        let _ = writeln!(out, "| conditional accuracy | {} |", pct(self.accuracy));
        let _ = writeln!(
            out,
            "| Frechet distance (samples vs {} test images) | {:.3} |",
            self.reference_images, self.frechet
        );
        let _ = writeln!(
            out,
            "| Frechet distance ({} real vs {} real) | {:.3} |",
            self.real_images, self.rest_images, self.frechet_real
        );
        let _ = writeln!(
            out,
            "| Frechet distance (the same {} after a `{}` round trip vs {} real) | {:.3} |",
            self.real_images, self.autoencoder_stage, self.rest_images, self.frechet_autoencoder
        );
        let _ = writeln!(
            out,
            "| KID (samples vs test images; real vs real; round trip vs real) | {:.5} +- {:.5}; {:.5}; {:.5} |",
            self.kid, self.kid_std, self.kid_real, self.kid_autoencoder
        );
        let _ = writeln!(
            out,
            "| `{}` reconstruction PSNR ({} images) | {:.2} dB |",
            self.autoencoder_stage, self.reconstruction_images, self.psnr
        );
        let _ = writeln!(
            out,
            "| `{}` reconstruction SSIM | {:.4} |",
            self.autoencoder_stage, self.ssim
        );
        if self.conditional {
            let _ = writeln!(
                out,
                "\n| class | samples | correct | accuracy |\n|---|---|---|---|"
            );
            for row in &self.per_class {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    row.class,
                    row.count,
                    row.correct,
                    pct(row.accuracy)
                );
            }
        }
        let _ = writeln!(
            out,
            "\n| guidance | accuracy | Frechet | KID |\n|---|---|---|---|"
        );
        for row in &self.scales {
            let _ = writeln!(
                out,
                "| {} | {} | {:.3} | {:.5} |",
                row.guidance,
                pct(row.measured.accuracy),
                row.measured.frechet,
                row.measured.kid
            );
        }
        if !self.samplers.is_empty() {
            let _ = writeln!(
                out,
                "\n| sampler | steps | spacing | sigmas | eta | NFE | accuracy | Frechet | KID | s / 1000 samples |\n\
                 |---|---|---|---|---|---|---|---|---|---|"
            );
            let stage = SweepEntry::of(main);
            let rows = std::iter::once((&stage, &self.scales[0].measured))
                .chain(self.samplers.iter().map(|r| (&r.entry, &r.measured)));
            for (e, r) in rows {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.5} | {:.1} |",
                    e.sampler.as_str(),
                    e.sampler_steps,
                    e.spacing.as_str(),
                    e.sigmas.as_str(),
                    e.eta,
                    r.nfe,
                    pct(r.accuracy),
                    r.frechet,
                    r.kid,
                    r.seconds_per_1000
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::samplers::{SamplerKind, Sigmas};

    fn measured(accuracy: f64, frechet: f64, nfe: usize) -> Measured {
        Measured {
            accuracy: Some(accuracy),
            frechet,
            kid: frechet / 1000.0,
            kid_std: 0.001,
            nfe,
            seconds_per_1000: 2.0 * nfe as f64,
        }
    }

    fn report() -> EvalReport {
        let dpm = SweepEntry {
            sampler: SamplerKind::DpmSolver2m,
            sampler_steps: 10,
            eta: 0.0,
            spacing: Default::default(),
            sigmas: Sigmas::Karras,
        };
        EvalReport {
            stage: "eval".into(),
            diffusion_stage: "ldm".into(),
            classifier_stage: "clf".into(),
            autoencoder_stage: "vae".into(),
            settings: EvalSettings {
                seed: 0,
                sample_seed: 7,
                sampling: SamplerSettings {
                    sampler_steps: 20,
                    ..SamplerSettings::default()
                },
                samples: 4,
                guidance_sweep: vec![1.5],
                sampler_sweep: vec![dpm.clone()],
                eval_images: 10,
            },
            conditional: true,
            accuracy: Some(0.75),
            per_class: vec![
                ClassAccuracy {
                    class: "zero".into(),
                    count: 4,
                    correct: 3,
                    accuracy: Some(0.75),
                },
                ClassAccuracy {
                    class: "one".into(),
                    count: 0,
                    correct: 0,
                    accuracy: None,
                },
            ],
            frechet: 12.5,
            kid: 0.0125,
            kid_std: 0.001,
            nfe: 20,
            seconds_per_1000: 40.0,
            frechet_real: 0.5,
            frechet_autoencoder: 2.0,
            kid_real: 0.0005,
            kid_autoencoder: 0.002,
            reference_images: 10_000,
            real_images: 4,
            rest_images: 9_996,
            psnr: 20.0,
            ssim: 0.9,
            reconstruction_images: 10,
            scales: vec![
                ScaleResult {
                    guidance: 3.0,
                    measured: measured(0.75, 12.5, 20),
                },
                ScaleResult {
                    guidance: 1.5,
                    measured: measured(0.5, 10.0, 20),
                },
            ],
            samplers: vec![SamplerResult {
                key: sampler_key(&dpm),
                entry: dpm,
                measured: measured(1.0, 11.25, 10),
            }],
        }
    }

    #[test]
    fn flat_metrics_name_every_number() {
        let m = report().metrics();
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            vec![
                "accuracy",
                "class_zero/accuracy",
                "frechet",
                "frechet_autoencoder",
                "frechet_real",
                "guidance_1.5/accuracy",
                "guidance_1.5/frechet",
                "guidance_1.5/kid",
                "guidance_3/accuracy",
                "guidance_3/frechet",
                "guidance_3/kid",
                "kid",
                "kid_autoencoder",
                "kid_real",
                "kid_std",
                "nfe",
                "psnr",
                "sampler_dpmpp_2m_10_karras/accuracy",
                "sampler_dpmpp_2m_10_karras/frechet",
                "sampler_dpmpp_2m_10_karras/kid",
                "sampler_dpmpp_2m_10_karras/nfe",
                "sampler_dpmpp_2m_10_karras/seconds_per_1000",
                "seconds_per_1000",
                "ssim"
            ]
        );
        assert_eq!(m["guidance_1.5/frechet"], 10.0);
        assert_eq!(m["guidance_1.5/kid"], 0.01);
        assert_eq!(m["kid_real"], 0.0005);
        assert_eq!(m["sampler_dpmpp_2m_10_karras/nfe"], 10.0);
        assert_eq!(m["sampler_dpmpp_2m_10_karras/seconds_per_1000"], 20.0);
        assert_eq!(m["nfe"], 20.0);
        let mut unconditional = report();
        unconditional.accuracy = None;
        unconditional.scales[0].measured.accuracy = None;
        assert!(!unconditional.metrics().contains_key("accuracy"));
    }

    #[test]
    fn markdown_tables() {
        let md = report().markdown();
        assert!(md.contains("| conditional accuracy | 75.0% |"), "{md}");
        assert!(md.contains("| zero | 4 | 3 | 75.0% |"), "{md}");
        assert!(md.contains("| one | 0 | 0 | - |"), "{md}");
        assert!(md.contains("| 1.5 | 50.0% | 10.000 | 0.01000 |"), "{md}");
        assert!(
            md.contains("| 0.01250 +- 0.00100; 0.00050; 0.00200 |"),
            "{md}"
        );
        assert!(md.contains("(4 real vs 9996 real) | 0.500 |"), "{md}");
        assert!(
            md.contains("(the same 4 after a `vae` round trip vs 9996 real) | 2.000 |"),
            "{md}"
        );
        assert!(md.contains("20 network evaluations each"), "{md}");
        assert!(
            md.contains(
                "| ddim | 20 | linspace | schedule | 0 | 20 | 75.0% | 12.500 | 0.01250 | 40.0 |"
            ),
            "the stage's own sampler heads the sampler table: {md}"
        );
        assert!(
            md.contains(
                "| dpmpp_2m | 10 | linspace | karras | 0 | 10 | 100.0% | 11.250 | 0.01125 | 20.0 |"
            ),
            "{md}"
        );
        let json = serde_json::to_value(report()).unwrap();
        assert_eq!(json["settings"]["sampler"], "ddim");
        assert_eq!(json["settings"]["sample_seed"], 7);
        assert_eq!(json["settings"]["sampler_sweep"][0]["sigmas"], "karras");
        assert_eq!(json["per_class"][1]["accuracy"], serde_json::Value::Null);
        assert_eq!(json["scales"][1]["nfe"], 20);
        assert_eq!(json["samplers"][0]["sampler"], "dpmpp_2m");
        assert_eq!(json["samplers"][0]["frechet"], 11.25);
        assert_eq!(json["samplers"][0]["key"], "sampler_dpmpp_2m_10_karras");
    }

    #[test]
    fn no_sampler_table_without_a_sampler_sweep() {
        let mut r = report();
        r.samplers.clear();
        assert!(!r.markdown().contains("| sampler |"));
    }
}
