//! The sampler keys of `diffusion` (its grids), `sample` and `eval` stages, and the entries of
//! an eval stage's `sampler_sweep`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{SamplerConfig, SamplerKind, Sigmas, Spacing};
use crate::diffusion::objective::Prediction;
use crate::diffusion::schedule::ScheduleConfig;
use crate::diffusion::validate;
use crate::settings::Checks;

/// How a stage samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SamplerSettings {
    /// `ddim`, `ddpm` (ancestral, all T steps), `euler`, `euler_ancestral`, `heun`, `dpmpp_2m`,
    /// `dpmpp_2m_sde` or `unipc`.
    pub sampler: SamplerKind,
    /// Noise levels visited (network evaluations; Heun takes 2 per step but the last).
    pub sampler_steps: usize,
    /// DDIM eta; 0 is deterministic. Only for `ddim`.
    pub eta: f64,
    /// Which of the T timesteps the levels are: `linspace` (from T-1 to 0), `leading` (multiples
    /// of T/N from 0) or `trailing` (from T-1 down by T/N; the one for zero terminal SNR). Not
    /// for `ddpm`, which visits every timestep.
    pub spacing: Spacing,
    /// `schedule` (the schedule's noise levels at the spaced timesteps) or `karras` (Karras et
    /// al.'s rho = 7 levels between the first and last of them; not for `ddim`, `ddpm`, nor with
    /// `schedule.zero_terminal_snr`).
    pub sigmas: Sigmas,
    /// Classifier-free guidance scale; 1 is the plain conditional model.
    pub guidance: f64,
    /// Guidance rescale phi (Lin et al. 2023): the guided output pulled back towards the
    /// conditional output's spread by this share; 0 is off, 0.7 the paper's.
    pub guidance_rescale: f64,
}

impl Default for SamplerSettings {
    fn default() -> Self {
        Self {
            sampler: SamplerKind::Ddim,
            sampler_steps: 50,
            eta: 0.0,
            spacing: Spacing::default(),
            sigmas: Sigmas::default(),
            guidance: 3.0,
            guidance_rescale: 0.0,
        }
    }
}

/// Largest classifier-free guidance scale accepted (beyond it samples are saturated noise).
pub const MAX_GUIDANCE: f64 = 100.0;

impl SamplerSettings {
    /// The sampler of these settings for a network that predicts `prediction`.
    pub fn config(&self, prediction: Prediction) -> SamplerConfig {
        SamplerConfig {
            kind: self.sampler,
            steps: self.sampler_steps,
            eta: self.eta,
            spacing: self.spacing,
            sigmas: self.sigmas,
            prediction,
        }
    }

    /// Checks against `schedule` (its timesteps bound the steps; zero terminal SNR rules out
    /// Karras sigmas).
    pub fn check(&self, schedule: &ScheduleConfig) -> Checks {
        let mut c = Checks::new();
        validate::sampler(
            &mut c,
            &self.config(schedule.prediction),
            schedule.timesteps,
            schedule.zero_terminal_snr,
        );
        check_guidance(&mut c, "guidance", self.guidance);
        validate::guidance_rescale(&mut c, self.guidance_rescale);
        c
    }
}

/// A guidance scale in [0, MAX_GUIDANCE].
pub fn check_guidance(c: &mut Checks, key: &str, scale: f64) {
    if !(scale.is_finite() && (0.0..=MAX_GUIDANCE).contains(&scale)) {
        c.fail(
            key,
            format!("{scale} is out of range; expected 0 <= guidance <= {MAX_GUIDANCE}"),
        );
    }
}

/// One entry of an eval stage's `sampler_sweep`: a sampler and its steps, and optionally its
/// `eta`, `spacing` and `sigmas` (their defaults when left out, not the stage's). Guidance and
/// guidance rescale are the stage's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SweepEntry {
    pub sampler: SamplerKind,
    pub sampler_steps: usize,
    #[serde(default)]
    pub eta: f64,
    #[serde(default)]
    pub spacing: Spacing,
    #[serde(default)]
    pub sigmas: Sigmas,
}

impl SweepEntry {
    /// The sampler of `settings`, as an entry.
    pub fn of(settings: &SamplerSettings) -> Self {
        Self {
            sampler: settings.sampler,
            sampler_steps: settings.sampler_steps,
            eta: settings.eta,
            spacing: settings.spacing,
            sigmas: settings.sigmas,
        }
    }

    /// The stage's sampler settings with this entry's sampler.
    pub fn settings(&self, stage: &SamplerSettings) -> SamplerSettings {
        SamplerSettings {
            sampler: self.sampler,
            sampler_steps: self.sampler_steps,
            eta: self.eta,
            spacing: self.spacing,
            sigmas: self.sigmas,
            ..stage.clone()
        }
    }

    /// A name for the entry's results, unique per entry: `dpmpp_2m_10`, `dpmpp_2m_10_karras`,
    /// `ddim_50_trailing`, `ddim_50_eta0.5` (the spacing when not `linspace`, the sigmas when
    /// not the schedule's, eta when not 0).
    pub fn key(&self) -> String {
        let mut key = format!("{}_{}", self.sampler.as_str(), self.sampler_steps);
        if self.spacing != Spacing::default() {
            key.push_str(&format!("_{}", self.spacing.as_str()));
        }
        if self.sigmas != Sigmas::default() {
            key.push_str(&format!("_{}", self.sigmas.as_str()));
        }
        if self.eta != 0.0 {
            key.push_str(&format!("_eta{}", self.eta));
        }
        key
    }
}

/// Checks every entry of a sampler sweep like a stage's sampler keys, each problem under
/// `sampler_sweep[i].<key>`, and refuses an entry listed twice.
pub fn check_sweep(c: &mut Checks, sweep: &[SweepEntry], schedule: &ScheduleConfig) {
    for (i, entry) in sweep.iter().enumerate() {
        let mut own = Checks::new();
        validate::sampler(
            &mut own,
            &entry
                .settings(&SamplerSettings::default())
                .config(schedule.prediction),
            schedule.timesteps,
            schedule.zero_terminal_snr,
        );
        for problem in own.into_vec() {
            c.fail(
                &format!("sampler_sweep[{i}].{}", problem.key),
                problem.message,
            );
        }
        if let Some(first) = sweep[..i].iter().position(|e| e == entry) {
            c.fail(
                &format!("sampler_sweep[{i}]"),
                format!(
                    "repeats sampler_sweep[{first}] ({}); list each sampler setting once",
                    entry.key()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> SweepEntry {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn sweep_entries_name_what_differs_from_the_defaults() {
        let plain = entry("sampler = \"dpmpp_2m\"\nsampler_steps = 10");
        assert_eq!(
            (plain.eta, plain.spacing, plain.sigmas),
            (0.0, Spacing::Linspace, Sigmas::Schedule)
        );
        assert_eq!(plain.key(), "dpmpp_2m_10");
        let karras = entry("sampler = \"dpmpp_2m\"\nsampler_steps = 10\nsigmas = \"karras\"");
        assert_eq!(karras.key(), "dpmpp_2m_10_karras");
        let ddim =
            entry("sampler = \"ddim\"\nsampler_steps = 50\nspacing = \"trailing\"\neta = 0.5");
        assert_eq!(ddim.key(), "ddim_50_trailing_eta0.5");
        assert!(toml::from_str::<SweepEntry>("sampler = \"ddim\"").is_err());
        assert!(
            toml::from_str::<SweepEntry>("sampler = \"ddim\"\nsampler_steps = 5\nguidance = 2")
                .is_err()
        );
    }

    #[test]
    fn an_entry_takes_the_stages_guidance_and_nothing_else() {
        let stage = SamplerSettings {
            sigmas: Sigmas::Karras,
            sampler: SamplerKind::Euler,
            guidance: 1.5,
            guidance_rescale: 0.7,
            ..SamplerSettings::default()
        };
        let ddim = entry("sampler = \"ddim\"\nsampler_steps = 15");
        let s = ddim.settings(&stage);
        assert_eq!((s.sampler, s.sampler_steps), (SamplerKind::Ddim, 15));
        assert_eq!(s.sigmas, Sigmas::Schedule);
        assert_eq!((s.guidance, s.guidance_rescale), (1.5, 0.7));
        assert_eq!(SweepEntry::of(&s), ddim);
    }

    #[test]
    fn sweep_problems_name_their_entry() {
        let schedule = ScheduleConfig {
            prediction: Prediction::V,
            zero_terminal_snr: true,
            ..ScheduleConfig::default()
        };
        let sweep = [
            entry("sampler = \"ddim\"\nsampler_steps = 0\nsigmas = \"karras\""),
            entry("sampler = \"heun\"\nsampler_steps = 10\nsigmas = \"karras\""),
            entry("sampler = \"unipc\"\nsampler_steps = 10"),
            entry("sampler = \"unipc\"\nsampler_steps = 10\nspacing = \"linspace\""),
        ];
        let mut c = Checks::new();
        check_sweep(&mut c, &sweep, &schedule);
        let found: Vec<(String, String)> = c
            .into_vec()
            .into_iter()
            .map(|i| (i.key, i.message))
            .collect();
        let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "sampler_sweep[0].sampler_steps",
                "sampler_sweep[0].sigmas",
                "sampler_sweep[1].sigmas",
                "sampler_sweep[3]"
            ]
        );
        assert!(found[2].1.contains("zero_terminal_snr"), "{found:?}");
        assert!(
            found[3].1.contains("repeats sampler_sweep[2] (unipc_10)"),
            "{found:?}"
        );
    }
}
