//! Checks of the diffusion settings, alone and in combination, for the configuration to report
//! as its own errors: each names the key at fault (as the experiment file spells it) and why.

use super::objective::Prediction;
use super::samplers::{SamplerConfig, SamplerKind, Sigmas, Spacing};

/// A setting that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("`{key}`: {reason}")]
pub struct Invalid {
    /// The key at fault, e.g. `prediction` or `sigmas`.
    pub key: &'static str,
    pub reason: String,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> Result<(), Invalid> {
    Err(Invalid {
        key,
        reason: reason.into(),
    })
}

/// The name a sampler has in experiment files.
fn name(kind: SamplerKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{kind:?}"))
}

/// The prediction a schedule allows: with zero terminal SNR, a_{T-1} = 0 and x_0 = (x_t -
/// sqrt(1 - a) epsilon) / sqrt(a) cannot be read from an epsilon prediction there.
pub fn schedule(prediction: Prediction, zero_terminal_snr: bool) -> Result<(), Invalid> {
    if zero_terminal_snr && prediction == Prediction::Epsilon {
        return invalid(
            "prediction",
            "zero_terminal_snr makes the last timestep pure noise (alphas_cumprod[T-1] = 0), \
             where an epsilon prediction says nothing about x_0; use `v` (as Lin et al. 2023 \
             do) or `x0`",
        );
    }
    Ok(())
}

/// Offset noise strength: finite and >= 0 (0 is off; Guttenberg used 0.1).
pub fn noise_offset(offset: f64) -> Result<(), Invalid> {
    if !(offset.is_finite() && offset >= 0.0) {
        return invalid(
            "noise_offset",
            format!("must be a finite number >= 0 (0 is off, 0.1 is usual), not {offset}"),
        );
    }
    Ok(())
}

/// Input perturbation gamma: in [0, 1) (0 is off; Ning et al. use 0.1).
pub fn input_perturbation(gamma: f64) -> Result<(), Invalid> {
    if !(0.0..1.0).contains(&gamma) {
        return invalid(
            "input_perturbation",
            format!("must be in [0, 1) (0 is off, 0.1 is the paper's), not {gamma}"),
        );
    }
    Ok(())
}

/// Guidance rescale phi: in [0, 1] (0 is off; Lin et al. use 0.7).
pub fn guidance_rescale(phi: f64) -> Result<(), Invalid> {
    if !(0.0..=1.0).contains(&phi) {
        return invalid(
            "guidance_rescale",
            format!("must be in [0, 1] (0 is off, 0.7 is the paper's), not {phi}"),
        );
    }
    Ok(())
}

/// A sampler's settings on a schedule of `timesteps` steps: the prediction the schedule allows,
/// 1 <= steps <= T (DDPM takes every step and ignores it), eta in [0, 1] and only for DDIM,
/// spacing and sigmas only where they apply, Karras sigmas only for the samplers that take them
/// and only with a finite largest sigma (not with zero terminal SNR). The first problem found.
pub fn sampler(
    cfg: &SamplerConfig,
    timesteps: usize,
    zero_terminal_snr: bool,
) -> Result<(), Invalid> {
    schedule(cfg.prediction, zero_terminal_snr)?;
    let kind = name(cfg.kind);
    if cfg.kind != SamplerKind::Ddpm && !(1..=timesteps).contains(&cfg.steps) {
        return invalid(
            "sampler_steps",
            format!(
                "{kind} needs between 1 and the schedule's {timesteps} timesteps, not {}",
                cfg.steps
            ),
        );
    }
    if !(0.0..=1.0).contains(&cfg.eta) {
        return invalid("eta", format!("must be in [0, 1], not {}", cfg.eta));
    }
    if cfg.eta != 0.0 && cfg.kind != SamplerKind::Ddim {
        return invalid(
            "eta",
            format!(
                "applies to ddim only, not {kind}: euler_ancestral, dpmpp_2m_sde and ddpm always \
                 add their full noise, the others none"
            ),
        );
    }
    if cfg.kind == SamplerKind::Ddpm && cfg.spacing != Spacing::Linspace {
        return invalid(
            "spacing",
            "ddpm visits every timestep; a spacing applies to the other samplers",
        );
    }
    if cfg.sigmas == Sigmas::Karras {
        if !cfg.kind.takes_sigmas() {
            return invalid(
                "sigmas",
                format!(
                    "karras needs a sampler that steps between any two noise levels (euler, \
                     euler_ancestral, heun, dpmpp_2m, dpmpp_2m_sde, unipc); {kind} steps between \
                     the schedule's own timesteps"
                ),
            );
        }
        if zero_terminal_snr {
            return invalid(
                "sigmas",
                "karras spans up to the schedule's largest sigma, which zero_terminal_snr makes \
                 infinite; use the schedule's sigmas with `trailing` spacing",
            );
        }
    }
    Ok(())
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

    fn key(r: Result<(), Invalid>) -> Option<&'static str> {
        r.err().map(|e| e.key)
    }

    #[test]
    fn zero_terminal_snr_refuses_epsilon_only() {
        assert_eq!(key(schedule(Prediction::Epsilon, true)), Some("prediction"));
        assert_eq!(key(schedule(Prediction::V, true)), None);
        assert_eq!(key(schedule(Prediction::X0, true)), None);
        assert_eq!(key(schedule(Prediction::Epsilon, false)), None);
        let e = schedule(Prediction::Epsilon, true).unwrap_err().to_string();
        assert!(e.starts_with("`prediction`: zero_terminal_snr"), "{e}");
    }

    #[test]
    fn ranges_are_checked_with_their_bounds() {
        assert!(noise_offset(0.0).is_ok() && noise_offset(0.1).is_ok());
        for bad in [-0.1, f64::NAN, f64::INFINITY] {
            assert_eq!(key(noise_offset(bad)), Some("noise_offset"), "{bad}");
        }
        assert!(input_perturbation(0.0).is_ok() && input_perturbation(0.1).is_ok());
        for bad in [-0.1, 1.0, f64::NAN] {
            assert_eq!(key(input_perturbation(bad)), Some("input_perturbation"));
        }
        assert!(guidance_rescale(0.0).is_ok() && guidance_rescale(1.0).is_ok());
        for bad in [-0.01, 1.01, f64::NAN] {
            assert_eq!(key(guidance_rescale(bad)), Some("guidance_rescale"));
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
        let cases: [(SamplerConfig, bool, Option<&str>); 9] = [
            (cfg(Ddim), false, None),
            (with(Heun, |c| c.steps = 1001), false, Some("sampler_steps")),
            (with(Ddim, |c| c.steps = 0), false, Some("sampler_steps")),
            (with(Ddpm, |c| c.steps = 5000), false, None),
            (with(Ddim, |c| c.eta = 0.5), false, None),
            (with(Ddim, |c| c.eta = 1.5), false, Some("eta")),
            (with(EulerAncestral, |c| c.eta = 0.5), false, Some("eta")),
            (
                with(Ddpm, |c| c.spacing = Spacing::Trailing),
                false,
                Some("spacing"),
            ),
            (cfg(Euler), true, Some("prediction")),
        ];
        for (c, zero_snr, expected) in cases {
            assert_eq!(key(sampler(&c, 1000, zero_snr)), expected, "{c:?}");
        }
        let karras = |kind| with(kind, |c| c.sigmas = Sigmas::Karras);
        for kind in [Ddim, Ddpm] {
            assert_eq!(key(sampler(&karras(kind), 1000, false)), Some("sigmas"));
        }
        for kind in [
            Euler,
            EulerAncestral,
            Heun,
            DpmSolver2m,
            DpmSolver2mSde,
            UniPc,
        ] {
            assert_eq!(key(sampler(&karras(kind), 1000, false)), None, "{kind:?}");
            let v = SamplerConfig {
                prediction: Prediction::V,
                ..karras(kind)
            };
            assert_eq!(key(sampler(&v, 1000, true)), Some("sigmas"), "{kind:?}");
        }
        let e = sampler(&karras(Ddim), 1000, false).unwrap_err().to_string();
        assert!(e.contains("ddim steps between"), "{e}");
    }
}
