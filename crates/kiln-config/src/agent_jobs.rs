//! `[agent_jobs]`: the agents a job may name, and the limits of jobs and their repositories.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Agent jobs: an agent (an image and a command) run over a repository in a sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AgentJobsConfig {
    /// The agents a job may name, by `agent_id`.
    pub agents: std::collections::BTreeMap<String, AgentConfig>,
    /// Jobs running at once on this server; the others wait as `pending`.
    pub max_concurrent: usize,
    /// Unfinished jobs one user may have at once.
    pub max_unfinished_per_user: usize,
    /// Largest repository (its clone on disk) a job may use, in bytes.
    pub max_repo_bytes: u64,
    /// How long cloning may take.
    pub clone_timeout_secs: u64,
    /// Output of the agent's command kept per stream (head and tail).
    pub max_log_bytes: u64,
    /// Largest diff a job may produce; a larger one is an error.
    pub max_diff_bytes: u64,
    /// Local repositories (paths and `file://` URLs) are allowed only under this
    /// directory; none at all when unset.
    pub local_repo_root: Option<PathBuf>,
    /// Where a repository named `owner/name` is cloned from: `<base>/owner/name.git`.
    pub git_host: String,
    /// Hosts (`host` or `host:port`, as a URL writes them) that repositories may be
    /// cloned from although they are internal (loopback, private, link-local, …): by
    /// default the server refuses every internal address a user names.
    pub allowed_internal_hosts: Vec<String>,
}

/// One agent: the image its sandbox is made from and the command run there, with the
/// repository checked out in `/workspace`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// An image reference in the image store, e.g. `kiln-demo/python:1`.
    pub image: String,
    /// A shell command, run in `/workspace`.
    pub command: String,
    /// Wall-clock limit of the command; the sandbox is destroyed after it.
    pub timeout_secs: u64,
    /// Extra environment of the command.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

impl Default for AgentJobsConfig {
    fn default() -> Self {
        // `script` runs the script the repository itself carries: it needs no model.
        let script = AgentConfig {
            image: "kiln-demo/python:1".into(),
            command: "sh /workspace/.kiln/agent.sh".into(),
            timeout_secs: 600,
            env: Default::default(),
        };
        Self {
            agents: [("script".to_string(), script)].into_iter().collect(),
            max_concurrent: 2,
            max_unfinished_per_user: 20,
            max_repo_bytes: 1024 * 1024 * 1024,
            clone_timeout_secs: 300,
            max_log_bytes: 1024 * 1024,
            max_diff_bytes: 64 * 1024 * 1024,
            local_repo_root: None,
            git_host: "https://github.com".into(),
            allowed_internal_hosts: Vec::new(),
        }
    }
}

impl AgentJobsConfig {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let a = self;
        if a.max_concurrent == 0 || a.max_unfinished_per_user == 0 || a.clone_timeout_secs == 0 {
            return Err(ConfigError::Rule(
                "agent_jobs.max_concurrent, max_unfinished_per_user and clone_timeout_secs must be at least 1".into(),
            ));
        }
        if a.max_log_bytes > 2 * 1024 * 1024 {
            return Err(ConfigError::Rule(
                "agent_jobs.max_log_bytes must be at most 2 MiB (the agent protocol's limit)"
                    .into(),
            ));
        }
        for (id, agent) in &a.agents {
            let id_ok = (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok || agent.timeout_secs == 0 || agent.command.trim().is_empty() {
                return Err(ConfigError::Rule(format!(
                    "agent_jobs.agents.{id}: the id must be 1-64 of [A-Za-z0-9_-], the command non-empty and timeout_secs at least 1"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
mod tests {
    use std::path::{Path, PathBuf};

    use crate::{Config, Overrides};

    #[test]
    fn agents_are_configured_in_the_file_beside_the_built_in_script() {
        figment::Jail::expect_with(|jail| {
            let printed = Config::default().to_masked_toml();
            assert!(printed.contains("[agent_jobs.agents.script]"), "{printed}");
            jail.create_file(
                "kiln.toml",
                "[agent_jobs]\nmax_concurrent = 3\nlocal_repo_root = \"/srv/repos\"\n\
                 [agent_jobs.agents.lint]\nimage = \"x/lint:1\"\ncommand = \"make lint\"\n\
                 timeout_secs = 60\nenv = { MODE = \"strict\" }\n",
            )?;
            let config =
                Config::load(Some(Path::new("kiln.toml")), &Overrides::default()).expect("loads");
            let jobs = &config.agent_jobs;
            assert_eq!(jobs.max_concurrent, 3);
            assert_eq!(jobs.local_repo_root, Some(PathBuf::from("/srv/repos")));
            assert_eq!(jobs.agents["lint"].env["MODE"], "strict");
            assert!(
                jobs.agents.contains_key("script"),
                "the built-in agent stays"
            );

            jail.create_file(
                "bad.toml",
                "[agent_jobs.agents.\"no spaces\"]\nimage = \"x:1\"\ncommand = \"true\"\ntimeout_secs = 1\n",
            )?;
            let err = Config::load(Some(Path::new("bad.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("no spaces"), "{err}");
            Ok(())
        });
    }
}
