//! `[exec]`: limits of commands run through the instance API (`/v1/instances/{id}/exec`).
//! Output kept per stream is `sessions.max_output_bytes`, as for Codeset exec.
use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ExecConfig {
    /// Timeout of a command that does not say.
    pub default_timeout_secs: u32,
    /// Longest timeout a command may ask for (background and streamed ones included).
    pub max_timeout_secs: u32,
    /// Longest command line (`command`, or all of `argv` together), in bytes.
    pub max_command_bytes: usize,
    /// Most `argv` items.
    pub max_argv_items: usize,
    /// Most `env` variables, and their names and values together, in bytes.
    pub max_env_vars: usize,
    pub max_env_bytes: usize,
    /// Largest `stdin` (decoded), in bytes.
    pub max_stdin_bytes: usize,
    /// Execs that may run at once in one instance (background and streamed ones included).
    pub max_running_per_instance: usize,
    /// Most bytes of one exec's stream spooled on the server for (re)connecting clients;
    /// output past it is not streamed (an `error` frame says so), the command runs on.
    pub max_stream_bytes: u64,
    /// Spools of all execs together, on this server's disk: past it, new background and
    /// streamed execs are refused (503) until old spools expire.
    pub max_stream_disk_bytes: u64,
    /// The same, for one user's execs (an org's account counts as one user): past it,
    /// that user's new background and streamed execs are refused (429), others' are not.
    pub max_stream_disk_bytes_per_user: u64,
    /// How long a finished exec's stream stays on the server for reconnects.
    pub stream_retention_secs: u64,
    /// Interval of keep-alive comments on an idle stream.
    pub keep_alive_secs: u64,
}

impl Default for ExecConfig {
    fn default() -> Self {
        Self {
            default_timeout_secs: 300,
            max_timeout_secs: 3600,
            max_command_bytes: 1024 * 1024,
            max_argv_items: 4096,
            max_env_vars: 256,
            max_env_bytes: 256 * 1024,
            max_stdin_bytes: 10 * 1024 * 1024,
            max_running_per_instance: 32,
            max_stream_bytes: 256 * 1024 * 1024,
            max_stream_disk_bytes: 8 * 1024 * 1024 * 1024,
            max_stream_disk_bytes_per_user: 1024 * 1024 * 1024,
            stream_retention_secs: 3600,
            keep_alive_secs: 15,
        }
    }
}

impl ExecConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.default_timeout_secs == 0 || self.default_timeout_secs > self.max_timeout_secs {
            return Err(ConfigError::Rule(
                "exec.default_timeout_secs must be between 1 and exec.max_timeout_secs".into(),
            ));
        }
        // The agent refuses longer timeouts.
        if self.max_timeout_secs > 24 * 60 * 60 {
            return Err(ConfigError::Rule(
                "exec.max_timeout_secs must be at most 86400 (24 h)".into(),
            ));
        }
        if self.max_running_per_instance == 0 || self.keep_alive_secs == 0 {
            return Err(ConfigError::Rule(
                "exec.max_running_per_instance and exec.keep_alive_secs must be positive".into(),
            ));
        }
        Ok(())
    }
}
