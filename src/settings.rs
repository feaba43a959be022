//! What every settings type shares: a way to say which of its values it cannot take.
//!
//! Each part of the experiment file (a data set, a network, a schedule, a group of stage keys)
//! is a serde type in its own domain with its defaults and docs, and checks its own values
//! into [`Checks`]; the configuration layer adds where each key came from.

/// One value a settings type cannot take: its key, relative to the settings' table, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

/// Collects the invalid values of one settings table.
#[derive(Debug, Default)]
pub struct Checks {
    found: Vec<Invalid>,
}

impl Checks {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn into_vec(self) -> Vec<Invalid> {
        self.found
    }

    pub fn fail(&mut self, key: &str, message: impl Into<String>) {
        self.found.push(Invalid {
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// A count that must be at least 1.
    pub fn positive(&mut self, key: &str, value: usize) {
        if value == 0 {
            self.fail(key, "must be at least 1");
        }
    }

    /// A count in `min..=max`.
    pub fn count_in(&mut self, key: &str, value: usize, min: usize, max: usize) {
        if value < min {
            self.fail(key, format!("must be at least {min}"));
        } else if value > max {
            self.fail(
                key,
                format!("{value} is out of range; expected at most {max}"),
            );
        }
    }

    /// A list of counts, non-empty, each at least 1.
    pub fn all_positive(&mut self, key: &str, values: &[usize]) {
        if values.is_empty() {
            self.fail(key, "must list at least one value");
        } else if values.contains(&0) {
            self.fail(
                key,
                format!("{values:?} contains 0; every entry must be at least 1"),
            );
        }
    }

    /// A probability-like value in [0, 1).
    pub fn probability(&mut self, key: &str, value: f64) {
        if !(0.0..1.0).contains(&value) {
            self.fail(
                key,
                format!("{value} is out of range; expected 0 <= value < 1"),
            );
        }
    }

    /// A finite number above zero.
    pub fn positive_number(&mut self, key: &str, value: f64) {
        if !(value.is_finite() && value > 0.0) {
            self.fail(key, format!("{value} must be a positive number"));
        }
    }

    /// Every width must split into `groups` GroupNorm groups; the problem is the groups key's.
    pub fn divisible(&mut self, key: &str, widths: &[usize], widths_from: &str, groups: usize) {
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
                key,
                format!(
                    "GroupNorm cannot split the channel widths {bad:?} ({widths_from}) into \
                     {groups} groups; use a group count that divides every width (e.g. 32 with \
                     widths that are multiples of 32)"
                ),
            );
        }
    }

    /// A finite number, zero or above.
    pub fn non_negative(&mut self, key: &str, value: f64) {
        if !(value.is_finite() && value >= 0.0) {
            self.fail(key, format!("{value} must be zero or positive"));
        }
    }
}
