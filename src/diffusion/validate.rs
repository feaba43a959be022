//! Checks of the diffusion settings, alone and in combination. Each adds every problem it finds
//! to a [`Checks`] under the key at fault (as the experiment file spells it, relative to the
//! table that holds it), so the configuration reports them all with their sources, and
//! `samplers::sample` refuses what a configuration would have refused.

use super::objective::Prediction;
use super::samplers::{SamplerConfig, SamplerKind, Sigmas, Spacing};
use crate::settings::Checks;

/// The prediction a schedule allows, blamed on `zero_terminal_snr` (both keys of `[schedule]`):
/// zero terminal SNR needs v prediction, as Lin et al. 2023 train it. At a_{T-1} = 0 an
/// epsilon prediction says nothing about x_0 (x_0 = (x_t - sqrt(1 - a) epsilon) / sqrt(a)), and
/// an x0 prediction's Min-SNR weight, min(SNR, gamma), is 0 there, so the pure-noise timestep
/// the option exists for would not be trained. The rescaled schedule also needs two timesteps
/// (its first and last sqrt(a) are mapped to themselves and to 0).
pub fn schedule(c: &mut Checks, prediction: Prediction, zero_terminal_snr: bool, timesteps: usize) {
    if !zero_terminal_snr {
        return;
    }
    match prediction {
        Prediction::V => {}
        Prediction::Epsilon => c.fail(
            "zero_terminal_snr",
            "makes the last timestep pure noise (alphas_cumprod[T-1] = 0), where an epsilon \
             prediction says nothing about x_0; set prediction = \"v\" (as Lin et al. 2023 do), \
             or zero_terminal_snr = false",
        ),
        Prediction::X0 => c.fail(
            "zero_terminal_snr",
            "makes the last timestep pure noise (SNR 0), which an x0 prediction's Min-SNR weight \
             min(SNR, gamma) leaves untrained and which Lin et al. 2023 pair with v prediction \
             only; set prediction = \"v\", or zero_terminal_snr = false",
        ),
    }
    if timesteps < 2 {
        c.fail(
            "zero_terminal_snr",
            format!("needs at least 2 timesteps to rescale, not {timesteps}"),
        );
    }
}

/// Offset noise strength: in [0, 1] (0 is off; Guttenberg used 0.1). Beyond 1 the shared shift
/// outweighs the noise itself.
pub fn noise_offset(c: &mut Checks, offset: f64) {
    if !(0.0..=1.0).contains(&offset) {
        c.fail(
            "noise_offset",
            format!(
                "{offset} is out of range; expected 0 <= noise_offset <= 1 (0 is off, 0.1 is usual)"
            ),
        );
    }
}

/// Input perturbation gamma: in [0, 1) (0 is off; Ning et al. use 0.1).
pub fn input_perturbation(c: &mut Checks, gamma: f64) {
    if !(0.0..1.0).contains(&gamma) {
        c.fail(
            "input_perturbation",
            format!(
                "{gamma} is out of range; expected 0 <= input_perturbation < 1 (0 is off, 0.1 is \
                 the paper's)"
            ),
        );
    }
}

/// Guidance rescale phi: in [0, 1] (0 is off; Lin et al. use 0.7).
pub fn guidance_rescale(c: &mut Checks, phi: f64) {
    if !(0.0..=1.0).contains(&phi) {
        c.fail(
            "guidance_rescale",
            format!(
                "{phi} is out of range; expected 0 <= guidance_rescale <= 1 (0 is off, 0.7 is \
                 the paper's)"
            ),
        );
    }
}

/// A sampler's own settings on a schedule of `timesteps` steps (its prediction is the
/// schedule's, checked by [`schedule`]): 1 <= steps <= T (DDPM takes every step and ignores
/// it), eta in [0, 1] and only for DDIM, a spacing other than `linspace` not for DDPM, Karras
/// sigmas only for the samplers that take them and only with a finite largest sigma (not with
/// zero terminal SNR).
pub fn sampler(c: &mut Checks, cfg: &SamplerConfig, timesteps: usize, zero_terminal_snr: bool) {
    let kind = cfg.kind.as_str();
    if cfg.kind != SamplerKind::Ddpm {
        c.count_in("sampler_steps", cfg.steps, 1, timesteps);
    }
    if !(0.0..=1.0).contains(&cfg.eta) {
        c.fail(
            "eta",
            format!("{} is out of range; expected 0 <= eta <= 1", cfg.eta),
        );
    } else if cfg.eta != 0.0 && cfg.kind != SamplerKind::Ddim {
        c.fail(
            "eta",
            format!(
                "applies to ddim only, not {kind}: euler_ancestral, dpmpp_2m_sde and ddpm always \
                 add their full noise, the others none; set eta = 0"
            ),
        );
    }
    if cfg.kind == SamplerKind::Ddpm && cfg.spacing != Spacing::Linspace {
        c.fail(
            "spacing",
            "ddpm visits every timestep; a spacing applies to the other samplers",
        );
    }
    if cfg.sigmas == Sigmas::Karras {
        if !cfg.kind.takes_sigmas() {
            c.fail(
                "sigmas",
                format!(
                    "karras needs a sampler that steps between any two noise levels (euler, \
                     euler_ancestral, heun, dpmpp_2m, dpmpp_2m_sde, unipc); {kind} steps between \
                     the schedule's own timesteps"
                ),
            );
        } else if zero_terminal_snr {
            c.fail(
                "sigmas",
                "karras spans up to the schedule's largest sigma, which \
                 schedule.zero_terminal_snr makes infinite; use the schedule's sigmas with \
                 spacing = \"trailing\"",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(kind: SamplerKind) -> SamplerConfig {
        SamplerConfig {
            kind,
            steps: 50,
            eta: 0.0,
            spacing: Spacing::Linspace,
            sigmas: Sigmas::Schedule,
            prediction: Prediction::Epsilon,
        }
    }

    fn keys(check: impl FnOnce(&mut Checks)) -> Vec<String> {
        let mut c = Checks::new();
        check(&mut c);
        c.into_vec().into_iter().map(|i| i.key).collect()
    }

    #[test]
    fn zero_terminal_snr_takes_v_prediction_only() {
        let ztsnr = |p| keys(|c| schedule(c, p, true, 1000));
        assert_eq!(ztsnr(Prediction::Epsilon), ["zero_terminal_snr"]);
        assert_eq!(ztsnr(Prediction::X0), ["zero_terminal_snr"]);
        assert!(ztsnr(Prediction::V).is_empty());
        assert!(keys(|c| schedule(c, Prediction::Epsilon, false, 1)).is_empty());
        assert_eq!(
            keys(|c| schedule(c, Prediction::Epsilon, true, 1)),
            ["zero_terminal_snr", "zero_terminal_snr"],
            "every problem, not the first"
        );
        let mut c = Checks::new();
        schedule(&mut c, Prediction::Epsilon, true, 1000);
        let message = &c.into_vec()[0].message;
        assert!(message.contains("prediction = \"v\""), "{message}");
    }

    #[test]
    fn ranges_are_checked_with_their_bounds() {
        for good in [0.0, 0.1, 1.0] {
            assert!(keys(|c| noise_offset(c, good)).is_empty(), "{good}");
        }
        for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert_eq!(keys(|c| noise_offset(c, bad)), ["noise_offset"], "{bad}");
        }
        for good in [0.0, 0.1, 0.99] {
            assert!(keys(|c| input_perturbation(c, good)).is_empty(), "{good}");
        }
        for bad in [-0.1, 1.0, f64::NAN] {
            assert_eq!(keys(|c| input_perturbation(c, bad)), ["input_perturbation"]);
        }
        for good in [0.0, 0.7, 1.0] {
            assert!(keys(|c| guidance_rescale(c, good)).is_empty(), "{good}");
        }
        for bad in [-0.01, 1.01, f64::NAN] {
            assert_eq!(keys(|c| guidance_rescale(c, bad)), ["guidance_rescale"]);
        }
    }

    #[test]
    fn sampler_combinations_are_refused_with_the_key_at_fault() {
        use SamplerKind::*;
        let with = |kind, edit: fn(&mut SamplerConfig)| {
            let mut c = cfg(kind);
            edit(&mut c);
            c
        };
        let cases: [(SamplerConfig, &[&str]); 9] = [
            (cfg(Ddim), &[]),
            (with(Heun, |c| c.steps = 1001), &["sampler_steps"]),
            (with(Ddim, |c| c.steps = 0), &["sampler_steps"]),
            (with(Ddpm, |c| c.steps = 5000), &[]),
            (with(Ddim, |c| c.eta = 0.5), &[]),
            (with(Ddim, |c| c.eta = 1.5), &["eta"]),
            (with(EulerAncestral, |c| c.eta = 0.5), &["eta"]),
            (with(Ddpm, |c| c.spacing = Spacing::Trailing), &["spacing"]),
            (
                with(Ddim, |c| {
                    c.steps = 0;
                    c.eta = 2.0;
                    c.sigmas = Sigmas::Karras;
                }),
                &["sampler_steps", "eta", "sigmas"],
            ),
        ];
        for (c, expected) in cases {
            assert_eq!(keys(|k| sampler(k, &c, 1000, false)), expected, "{c:?}");
        }
        let karras = |kind| with(kind, |c| c.sigmas = Sigmas::Karras);
        for kind in [Ddim, Ddpm] {
            assert_eq!(keys(|c| sampler(c, &karras(kind), 1000, false)), ["sigmas"]);
        }
        for kind in [
            Euler,
            EulerAncestral,
            Heun,
            DpmSolver2m,
            DpmSolver2mSde,
            UniPc,
        ] {
            assert!(keys(|c| sampler(c, &karras(kind), 1000, false)).is_empty());
            assert_eq!(
                keys(|c| sampler(c, &karras(kind), 1000, true)),
                ["sigmas"],
                "{kind:?}"
            );
        }
        let mut c = Checks::new();
        sampler(&mut c, &karras(Ddim), 1000, false);
        let message = &c.into_vec()[0].message;
        assert!(message.contains("ddim steps between"), "{message}");
    }
}
