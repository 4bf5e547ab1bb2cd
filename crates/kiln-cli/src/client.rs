//! `kiln sessions …` and `kiln exec`: the agent loop from a terminal, through a running
//! server's HTTP API (the same calls the SDK makes).
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use kiln_config::Config;
use serde_json::{json, Value};

mod exec_stream;

#[derive(Args)]
pub struct Server {
    /// The API's base URL [default: http://<listen>/api/v1].
    #[arg(long, env = "KILN_URL", global = true)]
    url: Option<String>,
    /// An API key [default: <data-dir>/admin.key].
    #[arg(long, env = "KILN_API_KEY", global = true, hide_env_values = true)]
    api_key: Option<String>,
}

#[derive(Subcommand)]
pub enum SessionsCommand {
    /// Create a session and wait until it is ready; prints its id.
    Create {
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        sample: String,
        #[arg(long)]
        ttl_minutes: Option<u32>,
    },
    /// List your sessions, newest first.
    List,
    /// Close a session.
    Close { session_id: String },
}

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) key: String,
}

impl Client {
    pub(crate) fn new(config: &Config, server: Server) -> anyhow::Result<Self> {
        let base = server
            .url
            .unwrap_or_else(|| format!("http://{}/api/v1", config.listen))
            .trim_end_matches('/')
            .to_string();
        let key = match server.api_key {
            Some(key) => key,
            None => {
                let path = config.data_dir.join("admin.key");
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "no --api-key / KILN_API_KEY given and cannot read {}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        Ok(Self {
            http: reqwest::Client::new(),
            base,
            key,
        })
    }

    /// A call to the instance API: `path` is under `/v1`, beside the `/api/v1` base.
    pub(crate) async fn call_v1(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let root = self.base.trim_end_matches("/api/v1");
        self.request(method, format!("{root}/v1{path}"), body).await
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.request(method, format!("{}{path}", self.base), body)
            .await
    }

    async fn request(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, url).bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(api_error(status, &body));
        }
        Ok(body)
    }
}

/// An error answer of the API (either of its two body shapes) as one line.
pub(crate) fn api_error(status: reqwest::StatusCode, body: &Value) -> anyhow::Error {
    let detail = &body["detail"];
    let message = match detail {
        Value::Array(errors) => errors
            .iter()
            .map(|e| format!("{}: {}", e["loc"], e["msg"].as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("; "),
        _ => detail["message"]
            .as_str()
            .unwrap_or("no details")
            .to_string(),
    };
    anyhow::anyhow!("{status}: {message}")
}

impl Client {
    /// The same server's instance API (`/v1`, beside `/api/v1`).
    pub(crate) fn v1(config: &Config, server: Server) -> anyhow::Result<Self> {
        let mut client = Self::new(config, server)?;
        client.base = format!("{}/v1", client.base.trim_end_matches("/api/v1"));
        Ok(client)
    }
}

pub async fn sessions(
    config: &Config,
    server: Server,
    command: SessionsCommand,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(config, server)?;
    match command {
        SessionsCommand::Create {
            dataset,
            sample,
            ttl_minutes,
        } => {
            let mut body = json!({"dataset": dataset, "sample_id": sample});
            if let Some(ttl) = ttl_minutes {
                body["ttl_minutes"] = json!(ttl);
            }
            let created = client
                .call(reqwest::Method::POST, "/sessions", Some(body))
                .await?;
            let id = created["session_id"]
                .as_str()
                .context("no session_id in the reply")?
                .to_string();
            // GET long-polls while the session is creating.
            let session = loop {
                let s = client
                    .call(reqwest::Method::GET, &format!("/sessions/{id}"), None)
                    .await?;
                if s["status"] != "creating" {
                    break s;
                }
            };
            if session["status"] != "ready" {
                bail!(
                    "session {id} is {}: {}",
                    session["status"],
                    session["error"]["message"]
                );
            }
            println!("{id}");
        }
        SessionsCommand::List => {
            let list = client.call(reqwest::Method::GET, "/sessions", None).await?;
            for s in list["sessions"].as_array().into_iter().flatten() {
                println!(
                    "{:<38} {:<10} {}/{}  expires {}",
                    s["session_id"].as_str().unwrap_or_default(),
                    s["status"].as_str().unwrap_or_default(),
                    s["dataset"].as_str().unwrap_or_default(),
                    s["sample_id"].as_str().unwrap_or_default(),
                    s["expires_at"].as_str().unwrap_or_default()
                );
            }
        }
        SessionsCommand::Close { session_id } => {
            let closed = client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/sessions/{session_id}"),
                    None,
                )
                .await?;
            println!(
                "closed after {:.1} s",
                closed["duration_seconds"].as_f64().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `command` in the session, prints its output, and exits with its exit code.
pub async fn exec(
    config: &Config,
    server: Server,
    session: &str,
    timeout: Option<u32>,
    command: &[String],
    stream: bool,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(config, server)?;
    if stream {
        return exec_stream::run(&client, session, timeout, command).await;
    }
    let mut body = json!({"command": command.join(" ")});
    if let Some(t) = timeout {
        body["command_timeout"] = json!(t);
    }
    let started = client
        .call(
            reqwest::Method::POST,
            &format!("/sessions/{session}/exec"),
            Some(body),
        )
        .await?;
    let iid = started["interaction_id"]
        .as_str()
        .context("no interaction_id in the reply")?;
    let done = loop {
        let i = client
            .call(
                reqwest::Method::GET,
                &format!("/sessions/{session}/interactions/{iid}"),
                None,
            )
            .await?;
        if !i["exit_code"].is_null() {
            break i;
        }
    };
    print!("{}", done["stdout"].as_str().unwrap_or_default());
    eprint!("{}", done["stderr"].as_str().unwrap_or_default());
    if let Some(message) = done["message"].as_str() {
        eprintln!("kiln: {message}");
    }
    let code = done["exit_code"].as_i64().unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
