//! `[mcp]`: the MCP server (`/mcp` on `kiln serve`, and `kiln mcp` over stdio). Its tools
//! call the same services as the HTTP API, under the same limits (`[exec]`, `[files]`,
//! `[snapshots]`, `[sessions]`); what is here is only what MCP adds.
use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct McpConfig {
    /// Serve the MCP endpoint at `/mcp`.
    pub enabled: bool,
    /// Lifetime of a session a tool opens when the tool call does not say (bounded by
    /// `sessions.max_ttl_minutes`): an agent that forgets `close_session` leaks nothing
    /// for longer than this.
    pub default_ttl_minutes: i64,
    /// Most bytes of each of stdout and stderr a tool answers with (the tail is kept):
    /// what an exec prints lands in a model's context.
    pub max_tool_output_bytes: usize,
    /// How long a tool waits for a session (or fork) to become ready, and for a
    /// verification to finish, before answering with what it has.
    pub max_wait_secs: u64,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            default_ttl_minutes: 60,
            max_tool_output_bytes: 64 * 1024,
            max_wait_secs: 1800,
        }
    }
}

impl McpConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.default_ttl_minutes < 1 {
            return Err(ConfigError::Rule(
                "mcp.default_ttl_minutes must be at least 1".into(),
            ));
        }
        if self.max_tool_output_bytes < 1024 || self.max_wait_secs == 0 {
            return Err(ConfigError::Rule(
                "mcp.max_tool_output_bytes must be at least 1024 and mcp.max_wait_secs at least 1"
                    .into(),
            ));
        }
        Ok(())
    }
}
