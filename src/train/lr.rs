//! Learning-rate schedule: linear warm-up to the peak, then constant or decaying to zero at the
//! last step (cosine or linear).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Learning rate after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LrDecay {
    #[default]
    Constant,
    Cosine,
    Linear,
}

/// The learning rate at (0-based) `step` of `total` steps.
pub fn lr_at(peak: f64, warmup_steps: usize, decay: LrDecay, step: u64, total: u64) -> f64 {
    if step < warmup_steps as u64 {
        return peak * (step + 1) as f64 / warmup_steps as f64;
    }
    let span = total.saturating_sub(warmup_steps as u64).max(1) as f64;
    let done = ((step - warmup_steps as u64) as f64 / span).min(1.0);
    match decay {
        LrDecay::Constant => peak,
        LrDecay::Linear => peak * (1.0 - done),
        LrDecay::Cosine => peak * 0.5 * (1.0 + (std::f64::consts::PI * done).cos()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly_then_holds() {
        let c = LrDecay::Constant;
        assert_eq!(lr_at(1.0, 0, c, 0, 10), 1.0);
        assert_eq!(lr_at(1.0, 4, c, 0, 10), 0.25);
        assert_eq!(lr_at(1.0, 4, c, 3, 10), 1.0);
        assert_eq!(lr_at(1.0, 4, c, 100, 10), 1.0);
    }

    #[test]
    fn decays_from_the_peak_after_warm_up() {
        for decay in [LrDecay::Cosine, LrDecay::Linear] {
            assert_eq!(lr_at(2.0, 4, decay, 2, 14), 1.5, "{decay:?} warm-up");
            assert_eq!(lr_at(2.0, 4, decay, 4, 14), 2.0, "{decay:?} peak");
            assert!(
                (lr_at(2.0, 4, decay, 9, 14) - 1.0).abs() < 1e-12,
                "{decay:?} half way"
            );
            assert!(lr_at(2.0, 4, decay, 13, 14) < 0.25, "{decay:?} last step");
        }
        let quarter = 1.0 + std::f64::consts::FRAC_1_SQRT_2;
        assert!((lr_at(2.0, 0, LrDecay::Cosine, 1, 4) - quarter).abs() < 1e-12);
        assert!((lr_at(2.0, 0, LrDecay::Linear, 1, 4) - 1.5).abs() < 1e-12);
    }
}
