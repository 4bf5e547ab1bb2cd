//! `kiln files get|put|ls`: an instance's files from a terminal, through a running
//! server's `/v1/instances/{id}/files` routes.
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use kiln_config::Config;
use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use crate::client::{api_error, Client, Server};

#[derive(Subcommand)]
pub enum FilesCommand {
    /// Print a file's bytes (or write them to --output).
    Get {
        instance: String,
        /// The file in the sandbox (relative paths start at /testbed).
        path: String,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Replace a file atomically with a local file's bytes (standard input for `-`).
    Put {
        instance: String,
        /// The file in the sandbox.
        path: String,
        /// The local file [default: standard input].
        #[arg(default_value = "-")]
        source: String,
        /// Permission bits in octal, e.g. 0755.
        #[arg(long)]
        mode: Option<String>,
        /// Create missing parent directories.
        #[arg(long, short)]
        parents: bool,
    },
    /// List a directory: type, mode, size, modification time, path.
    Ls {
        instance: String,
        /// The directory [default: the working directory].
        path: Option<String>,
        /// Levels to descend.
        #[arg(long, default_value_t = 1)]
        depth: u32,
    },
}

pub async fn run(
    config: &Config,
    server: Server,
    command: FilesCommand,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(config, server)?;
    match command {
        FilesCommand::Get {
            instance,
            path,
            output,
        } => {
            let request = v1(&client, Method::GET, &instance).query(&[("path", &path)]);
            let bytes = send(request)
                .await?
                .bytes()
                .await
                .context("reading the file")?;
            match output {
                Some(to) => std::fs::write(&to, &bytes)
                    .with_context(|| format!("cannot write {}", to.display()))?,
                None => std::io::stdout()
                    .write_all(&bytes)
                    .context("writing to standard output")?,
            }
        }
        FilesCommand::Put {
            instance,
            path,
            source,
            mode,
            parents,
        } => {
            let content = if source == "-" {
                let mut buffer = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut buffer)
                    .context("reading standard input")?;
                buffer
            } else {
                std::fs::read(&source).with_context(|| format!("cannot read {source}"))?
            };
            let mut query = vec![("path", path), ("create_parents", parents.to_string())];
            if let Some(mode) = mode {
                query.push(("mode", mode));
            }
            let request = v1(&client, Method::POST, &instance)
                .query(&query)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(content);
            let written: Value = send(request).await?.json().await.context("the reply")?;
            eprintln!("wrote {} bytes to {}", written["size"], written["path"]);
        }
        FilesCommand::Ls {
            instance,
            path,
            depth,
        } => {
            let mut query = vec![("depth", depth.to_string())];
            if let Some(path) = path {
                query.push(("path", path));
            }
            let request = client
                .http
                .get(format!(
                    "{}/instances/{instance}/files/list",
                    v1_base(&client)
                ))
                .bearer_auth(&client.key)
                .query(&query);
            let listing: Value = send(request).await?.json().await.context("the reply")?;
            for e in listing["entries"].as_array().into_iter().flatten() {
                println!(
                    "{:<7} {} {:>10} {:<24} {}",
                    e["type"].as_str().unwrap_or_default(),
                    e["mode"].as_str().unwrap_or_default(),
                    e["size"].as_u64().unwrap_or_default(),
                    e["mtime"].as_str().unwrap_or_default(),
                    e["path"].as_str().unwrap_or_default()
                );
            }
            if listing["truncated"] == true {
                eprintln!("kiln: more entries than the server lists at once (truncated)");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The instance API's root: `--url` names `/api/v1`, whose sibling it is.
fn v1_base(client: &Client) -> String {
    format!("{}/v1", client.base.trim_end_matches("/api/v1"))
}

fn v1(client: &Client, method: Method, instance: &str) -> RequestBuilder {
    client
        .http
        .request(
            method,
            format!("{}/instances/{instance}/files", v1_base(client)),
        )
        .bearer_auth(&client.key)
}

async fn send(request: RequestBuilder) -> anyhow::Result<reqwest::Response> {
    let response = request.send().await.context("cannot reach the server")?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    Err(api_error(status, &body))
}
