//! `[logging]`: what goes to TensorBoard and the terminal, and how often.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::settings::Checks;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// Scalars every N steps.
    pub log_every: usize,
    /// Sample grids every N steps (and always at the end of a stage).
    pub sample_every: usize,
    /// Images per side of a sample grid.
    pub grid_size: usize,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            log_every: 50,
            sample_every: 1000,
            grid_size: 8,
        }
    }
}

/// Most images per side of a sample grid (a 32x32 grid is 1024 samples per drawing).
pub const MAX_GRID: usize = 32;

impl LoggingConfig {
    pub fn check(&self) -> Checks {
        let mut c = Checks::new();
        c.positive("log_every", self.log_every);
        c.positive("sample_every", self.sample_every);
        c.count_in("grid_size", self.grid_size, 1, MAX_GRID);
        c
    }
}
