//! `[eval]`: limits of eval runs started through `/v1/parallel/runs`.
use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Predictions one run may carry.
    pub max_predictions: usize,
    /// Largest `max_workers` a run may ask for (instances evaluated at once).
    pub max_workers: usize,
    pub default_max_workers: usize,
    /// Per-instance timeout when a run names none, and the largest it may name, seconds.
    pub default_timeout_secs: u64,
    pub max_timeout_secs: u64,
    /// Runs one user may have running at once (429 beyond).
    pub max_running_per_user: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            max_predictions: 5000,
            max_workers: 16,
            default_max_workers: 4,
            default_timeout_secs: 1800,
            max_timeout_secs: 4 * 3600,
            max_running_per_user: 4,
        }
    }
}

impl EvalConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.default_max_workers == 0 || self.default_max_workers > self.max_workers {
            return Err(ConfigError::Rule(
                "eval.default_max_workers must be between 1 and max_workers".into(),
            ));
        }
        if self.default_timeout_secs == 0 || self.default_timeout_secs > self.max_timeout_secs {
            return Err(ConfigError::Rule(
                "eval.default_timeout_secs must be between 1 and max_timeout_secs".into(),
            ));
        }
        Ok(())
    }
}
