//! What the eval stage measured, and its three readings: `metrics.json`, the flat metrics of
//! the manifest and TensorBoard, and a markdown summary.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::diffusion::samplers::SamplerKind;
use crate::metrics::accuracy::ClassAccuracy;

/// The settings a measurement was made with.
#[derive(Debug, Clone, Serialize)]
pub struct EvalSettings {
    pub seed: u64,
    pub sampler: SamplerKind,
    pub sampler_steps: usize,
    pub eta: f64,
    pub guidance: f64,
    pub samples: usize,
    pub guidance_sweep: Vec<f64>,
    pub eval_images: usize,
}

/// Sample quality at one guidance scale.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleResult {
    pub guidance: f64,
    /// Fraction of samples the classifier labels as their prompt's class; `None` for an
    /// unconditional model.
    pub accuracy: Option<f64>,
    /// Frechet distance between the samples' and the test split's classifier features.
    pub frechet: f64,
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
    /// `real_images` test images against the other `rest_images`: the distance two sets of
    /// real digits of these sizes have, the floor `frechet` can reach.
    pub frechet_real: f64,
    /// The same `real_images` after an autoencoder round trip (decoded posterior means)
    /// against the other `rest_images`: the floor the autoencoder leaves `frechet`.
    pub frechet_autoencoder: f64,
    pub reference_images: usize,
    pub real_images: usize,
    pub rest_images: usize,
    /// Reconstruction quality of the autoencoder on `reconstruction_images` test images.
    pub psnr: f64,
    pub ssim: f64,
    pub reconstruction_images: usize,
    /// Every scale measured: `settings.guidance` first, then `settings.guidance_sweep`.
    pub scales: Vec<ScaleResult>,
}

/// The key prefix of the results at guidance `scale`: `guidance_3`, `guidance_1.5`.
pub fn scale_key(scale: f64) -> String {
    format!("guidance_{scale}")
}

impl EvalReport {
    /// The numbers as flat `name -> value` pairs: the manifest's metrics, and (prefixed by the
    /// stage) the TensorBoard tags.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::from([
            ("frechet".to_string(), self.frechet),
            ("frechet_real".to_string(), self.frechet_real),
            ("frechet_autoencoder".to_string(), self.frechet_autoencoder),
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
            if let Some(a) = s.accuracy {
                m.insert(format!("{key}/accuracy"), a);
            }
            m.insert(format!("{key}/frechet"), s.frechet);
        }
        m
    }

    /// A markdown summary: the headline numbers, the per-class table, the per-scale table.
    pub fn markdown(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |a| format!("{:.1}%", 100.0 * a));
        let _ = writeln!(
            out,
            "{} samples of `{}` ({} {} steps, eta {}, guidance {}), judged by `{}`\n",
            s.samples,
            self.diffusion_stage,
            s.sampler.as_str(),
            s.sampler_steps,
            s.eta,
            s.guidance,
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
        let _ = writeln!(out, "\n| guidance | accuracy | Frechet |\n|---|---|---|");
        for row in &self.scales {
            let _ = writeln!(
                out,
                "| {} | {} | {:.3} |",
                row.guidance,
                pct(row.accuracy),
                row.frechet
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> EvalReport {
        EvalReport {
            stage: "eval".into(),
            diffusion_stage: "ldm".into(),
            classifier_stage: "clf".into(),
            autoencoder_stage: "vae".into(),
            settings: EvalSettings {
                seed: 0,
                sampler: SamplerKind::Ddim,
                sampler_steps: 20,
                eta: 0.0,
                guidance: 3.0,
                samples: 4,
                guidance_sweep: vec![1.5],
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
            frechet_real: 0.5,
            frechet_autoencoder: 2.0,
            reference_images: 10_000,
            real_images: 4,
            rest_images: 9_996,
            psnr: 20.0,
            ssim: 0.9,
            reconstruction_images: 10,
            scales: vec![
                ScaleResult {
                    guidance: 3.0,
                    accuracy: Some(0.75),
                    frechet: 12.5,
                },
                ScaleResult {
                    guidance: 1.5,
                    accuracy: Some(0.5),
                    frechet: 10.0,
                },
            ],
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
                "guidance_3/accuracy",
                "guidance_3/frechet",
                "psnr",
                "ssim"
            ]
        );
        assert_eq!(m["guidance_1.5/frechet"], 10.0);
        let mut unconditional = report();
        unconditional.accuracy = None;
        unconditional.scales[0].accuracy = None;
        assert!(!unconditional.metrics().contains_key("accuracy"));
    }

    #[test]
    fn markdown_tables() {
        let md = report().markdown();
        assert!(md.contains("| conditional accuracy | 75.0% |"), "{md}");
        assert!(md.contains("| zero | 4 | 3 | 75.0% |"), "{md}");
        assert!(md.contains("| one | 0 | 0 | - |"), "{md}");
        assert!(md.contains("| 1.5 | 50.0% | 10.000 |"), "{md}");
        assert!(md.contains("(4 real vs 9996 real) | 0.500 |"), "{md}");
        assert!(
            md.contains("(the same 4 after a `vae` round trip vs 9996 real) | 2.000 |"),
            "{md}"
        );
        let json = serde_json::to_value(report()).unwrap();
        assert_eq!(json["settings"]["sampler"], "ddim");
        assert_eq!(json["per_class"][1]["accuracy"], serde_json::Value::Null);
    }
}
