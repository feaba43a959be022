//! Which of the schedule's T timesteps a sampler with N steps visits, as diffusers names the
//! choices (its `timestep_spacing`; Lin et al. 2023, arXiv 2305.08891, Table 2), with
//! `steps_offset` 0.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Timestep spacings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Spacing {
    /// N values evenly spread over [T-1, 0], rounded (halves away from zero): starts at the
    /// last timestep, ends at 0. T = 1000, N = 10: 999, 888, ..., 111, 0.
    #[default]
    Linspace,
    /// Multiples of T / N (integer division) from 0: T = 1000, N = 10: 900, 800, ..., 0. Never
    /// starts at the last timestep.
    Leading,
    /// round(T - i T/N) - 1 for i < N (halves to even, as numpy): T = 1000, N = 10: 999, 899,
    /// ..., 99. Starts at the last timestep, the spacing Lin et al. recommend.
    Trailing,
}

impl Spacing {
    pub const ALL: [Spacing; 3] = [Self::Linspace, Self::Leading, Self::Trailing];

    /// The name experiment files give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Linspace => "linspace",
            Self::Leading => "leading",
            Self::Trailing => "trailing",
        }
    }
}

/// The timesteps visited, descending. `steps` is clamped to [1, T].
///
/// `linspace` rounds halves away from zero, as this project always has; numpy (so diffusers)
/// rounds them to even, so the two differ where (T-1) i/(N-1) is k + 1/2 with k even: T = 1000,
/// N = 7 gives 167 and 833 here, 166 and 832 there.
pub fn timesteps(spacing: Spacing, timesteps: usize, steps: usize) -> Vec<usize> {
    let steps = steps.clamp(1, timesteps);
    match spacing {
        Spacing::Linspace => {
            if steps == 1 {
                return vec![timesteps - 1];
            }
            let mut ts: Vec<usize> = (0..steps)
                .map(|i| {
                    ((i as f64 * (timesteps - 1) as f64) / (steps - 1) as f64).round() as usize
                })
                .collect();
            ts.dedup();
            ts.reverse();
            ts
        }
        Spacing::Leading => {
            let ratio = timesteps / steps;
            (0..steps).rev().map(|i| i * ratio).collect()
        }
        Spacing::Trailing => {
            let ratio = timesteps as f64 / steps as f64;
            (0..steps)
                .map(|i| (timesteps as f64 - i as f64 * ratio).round_ties_even() as usize - 1)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spacing_visits_every_timestep_when_steps_equal_t() {
        for spacing in [Spacing::Linspace, Spacing::Leading, Spacing::Trailing] {
            let all: Vec<usize> = (0..10).rev().collect();
            assert_eq!(timesteps(spacing, 10, 10), all, "{spacing:?}");
        }
    }

    #[test]
    fn linspace_is_todays_ddim_spacing() {
        let t = |n| timesteps(Spacing::Linspace, 1000, n);
        assert_eq!(t(5), vec![999, 749, 500, 250, 0]);
        assert_eq!(t(10), vec![999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
        assert_eq!(t(7), vec![999, 833, 666, 500, 333, 167, 0]);
        assert_eq!(t(1), vec![999]);
        assert_eq!(timesteps(Spacing::Linspace, 10, 50).len(), 10);
    }

    #[test]
    fn leading_steps_by_whole_multiples_from_zero() {
        let t = |n| timesteps(Spacing::Leading, 1000, n);
        assert_eq!(t(10), vec![900, 800, 700, 600, 500, 400, 300, 200, 100, 0]);
        assert_eq!(t(3), vec![666, 333, 0]);
        assert_eq!(t(1), vec![0]);
    }

    #[test]
    fn trailing_starts_at_the_last_timestep() {
        let t = |n| timesteps(Spacing::Trailing, 1000, n);
        assert_eq!(t(10), vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
        assert_eq!(t(3), vec![999, 666, 332]);
        assert_eq!(t(1), vec![999]);
        // 1000 - 62.5 i: halves round to even, 937.5 -> 938 and 812.5 -> 812.
        assert_eq!(&t(16)[..4], &[999, 937, 874, 811]);
    }
}
