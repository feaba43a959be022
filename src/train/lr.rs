//! Learning-rate schedule: linear warm-up to the peak, then constant.

/// The learning rate at (0-based) `step`.
pub fn lr_at(peak: f64, warmup_steps: usize, step: u64) -> f64 {
    if warmup_steps == 0 {
        peak
    } else {
        peak * ((step + 1) as f64 / warmup_steps as f64).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly() {
        assert_eq!(lr_at(1.0, 0, 0), 1.0);
        assert_eq!(lr_at(1.0, 4, 0), 0.25);
        assert_eq!(lr_at(1.0, 4, 3), 1.0);
        assert_eq!(lr_at(1.0, 4, 100), 1.0);
    }
}
