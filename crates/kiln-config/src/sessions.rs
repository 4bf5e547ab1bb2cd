//! `[sessions]`: lifetimes, command limits and queues of sessions.
use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    pub default_ttl_minutes: u32,
    pub max_ttl_minutes: u32,
    /// Sessions one user may have `creating` or `ready` at once.
    pub max_live_sessions_per_user: u32,
    /// How long a GET on an unfinished session, interaction or job waits for a change.
    pub long_poll_secs: u64,
    pub default_command_timeout_secs: u32,
    pub max_command_timeout_secs: u32,
    /// Longest command accepted, in bytes.
    pub max_command_bytes: usize,
    /// Output kept per stream of each command (the rest is cut, and the reply says so).
    pub max_output_bytes: usize,
    /// Largest file `upload` accepts (decoded), in bytes.
    pub max_upload_bytes: usize,
    /// Interactions that may wait in one session's queue.
    pub max_queued_interactions: usize,
    /// Days an interaction's stdout and stderr are kept after it finished; older output is
    /// emptied by a periodic task and the interaction says `output_expired`. 0 keeps it.
    pub output_retention_days: u32,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            default_ttl_minutes: 30,
            max_ttl_minutes: 24 * 60,
            max_live_sessions_per_user: 100,
            long_poll_secs: 20,
            default_command_timeout_secs: 300,
            max_command_timeout_secs: 3600,
            max_command_bytes: 1024 * 1024,
            max_output_bytes: 1024 * 1024,
            max_upload_bytes: 10 * 1024 * 1024,
            max_queued_interactions: 1000,
            output_retention_days: 7,
        }
    }
}

impl SessionsConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let s = self;
        if s.default_ttl_minutes == 0 || s.default_ttl_minutes > s.max_ttl_minutes {
            return Err(ConfigError::Rule(
                "sessions.default_ttl_minutes must be between 1 and max_ttl_minutes".into(),
            ));
        }
        if s.default_command_timeout_secs == 0
            || s.default_command_timeout_secs > s.max_command_timeout_secs
        {
            return Err(ConfigError::Rule(
                "sessions.default_command_timeout_secs must be between 1 and max_command_timeout_secs".into(),
            ));
        }
        Ok(())
    }
}
