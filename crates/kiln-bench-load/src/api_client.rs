//! The few sessions endpoints the load needs, spoken the way an agent would: create then
//! long-poll until ready, POST exec then long-poll the interaction until it has an exit code.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("HTTP request failed: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("{what} answered {status}: {body}")]
    Status {
        what: &'static str,
        status: StatusCode,
        body: String,
    },
    #[error("session {session_id} ended up `{status}` instead of ready")]
    SessionFailed { session_id: String, status: String },
    #[error("command exited with {exit_code}: {stderr}")]
    CommandFailed { exit_code: i64, stderr: String },
    #[error("gave up waiting after {0:?} (the run's deadline)")]
    Deadline(Duration),
}

#[derive(Debug, Deserialize)]
struct Created {
    session_id: String,
}

#[derive(Debug, Deserialize)]
struct SessionView {
    status: String,
}

#[derive(Debug, Deserialize)]
struct ExecStarted {
    interaction_id: String,
}

#[derive(Debug, Deserialize)]
struct Interaction {
    exit_code: Option<i64>,
    #[serde(default)]
    stderr: Option<String>,
}

/// One user's view of the API; cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct ApiClient {
    http: Client,
    base: String,
    key: String,
    deadline: Instant,
}

impl ApiClient {
    /// `base` is the API root, e.g. `http://127.0.0.1:8000/api/v1`. Every wait gives up at
    /// `deadline`, so a stuck server cannot hold the benchmark forever.
    pub fn new(base: &str, key: &str, deadline: Instant) -> Result<Self, LoadError> {
        // Long-polls hold a request up to the server's limit (20 s by default); the
        // timeout only has to catch a server that stopped answering.
        let http = Client::builder()
            .timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
            deadline,
        })
    }

    fn check_deadline(&self) -> Result<(), LoadError> {
        let now = Instant::now();
        if now >= self.deadline {
            return Err(LoadError::Deadline(now.duration_since(self.deadline)));
        }
        Ok(())
    }

    async fn send<T: for<'de> Deserialize<'de>>(
        &self,
        what: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, LoadError> {
        let response = request.bearer_auth(&self.key).send().await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(LoadError::Status { what, status, body });
        }
        Ok(response.json().await?)
    }

    /// Creates a session and waits until it is ready; returns its id.
    pub async fn create_ready(&self, dataset: &str, sample_id: &str) -> Result<String, LoadError> {
        let created: Created = self
            .send(
                "POST /sessions",
                self.http
                    .post(format!("{}/sessions", self.base))
                    .json(&json!({"dataset": dataset, "sample_id": sample_id})),
            )
            .await?;
        loop {
            self.check_deadline()?;
            let view: SessionView = self
                .send(
                    "GET /sessions/{id}",
                    self.http
                        .get(format!("{}/sessions/{}", self.base, created.session_id)),
                )
                .await?;
            match view.status.as_str() {
                "ready" => return Ok(created.session_id),
                "creating" => continue,
                other => {
                    return Err(LoadError::SessionFailed {
                        session_id: created.session_id,
                        status: other.to_owned(),
                    })
                }
            }
        }
    }

    /// Runs one command to completion; a non-zero exit is an error (the load only runs
    /// commands that succeed).
    pub async fn run_command(&self, session_id: &str, command: &str) -> Result<(), LoadError> {
        let started: ExecStarted = self
            .send(
                "POST /sessions/{id}/exec",
                self.http
                    .post(format!("{}/sessions/{session_id}/exec", self.base))
                    .json(&json!({"command": command})),
            )
            .await?;
        let url = format!(
            "{}/sessions/{session_id}/interactions/{}",
            self.base, started.interaction_id
        );
        loop {
            self.check_deadline()?;
            let interaction: Interaction = self
                .send("GET /sessions/{id}/interactions/{id}", self.http.get(&url))
                .await?;
            match interaction.exit_code {
                None => continue,
                Some(0) => return Ok(()),
                Some(exit_code) => {
                    return Err(LoadError::CommandFailed {
                        exit_code,
                        stderr: interaction.stderr.unwrap_or_default(),
                    })
                }
            }
        }
    }

    pub async fn close(&self, session_id: &str) -> Result<(), LoadError> {
        let _: serde_json::Value = self
            .send(
                "DELETE /sessions/{id}",
                self.http
                    .delete(format!("{}/sessions/{session_id}", self.base)),
            )
            .await?;
        Ok(())
    }
}
