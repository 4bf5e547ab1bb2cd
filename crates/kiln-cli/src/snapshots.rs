//! `kiln snapshot …` and `kiln fork`: snapshots, checkpoints, rollback and forks of an
//! instance (a session id works) through a running server's `/v1` API.
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use kiln_config::Config;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Client, Server};

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot an instance's files; prints the snapshot's id.
    Create {
        instance: String,
        #[arg(long)]
        name: Option<String>,
        /// A checkpoint: what `kiln snapshot rollback` goes back to.
        #[arg(long)]
        checkpoint: bool,
    },
    /// List an instance's snapshots, newest first.
    List { instance: String },
    /// Delete a snapshot.
    Delete { instance: String, snapshot: String },
    /// Restore a snapshot into its instance, or into a new one (printed).
    Restore {
        instance: String,
        snapshot: String,
        #[arg(long)]
        new_instance: bool,
    },
    /// Roll an instance back to its latest checkpoint (or the one named).
    Rollback {
        instance: String,
        #[arg(long)]
        checkpoint: Option<String>,
    },
}

pub async fn snapshot(
    config: &Config,
    server: Server,
    command: SnapshotCommand,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(config, server)?;
    match command {
        SnapshotCommand::Create {
            instance,
            name,
            checkpoint,
        } => {
            let kind = if checkpoint { "checkpoint" } else { "snapshot" };
            let mut body = json!({ "kind": kind });
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            let made = client
                .call_v1(
                    Method::POST,
                    &format!("/instances/{instance}/snapshots"),
                    Some(body),
                )
                .await?;
            println!("{}", made["snapshot_id"].as_str().unwrap_or_default());
        }
        SnapshotCommand::List { instance } => {
            let list = client
                .call_v1(
                    Method::GET,
                    &format!("/instances/{instance}/snapshots"),
                    None,
                )
                .await?;
            for s in list["snapshots"].as_array().into_iter().flatten() {
                println!(
                    "{:<38} {:<10} {:>12} B  {:<24} {}",
                    s["snapshot_id"].as_str().unwrap_or_default(),
                    s["kind"].as_str().unwrap_or_default(),
                    s["size_bytes"].as_u64().unwrap_or_default(),
                    s["name"].as_str().unwrap_or_default(),
                    s["created_at"].as_str().unwrap_or_default()
                );
            }
        }
        SnapshotCommand::Delete { instance, snapshot } => {
            let done = client
                .call_v1(
                    Method::DELETE,
                    &format!("/instances/{instance}/snapshots/{snapshot}"),
                    None,
                )
                .await?;
            if done["removed"] == true {
                println!("deleted");
            } else {
                println!("deleted; its files stay while instances or snapshots stand on it");
            }
        }
        SnapshotCommand::Restore {
            instance,
            snapshot,
            new_instance,
        } => {
            let done = client
                .call_v1(
                    Method::POST,
                    &format!("/instances/{instance}/snapshots/{snapshot}/restore"),
                    Some(json!({ "new_instance": new_instance })),
                )
                .await?;
            print_instance(&done["instance"])?;
        }
        SnapshotCommand::Rollback {
            instance,
            checkpoint,
        } => {
            let done = client
                .call_v1(
                    Method::POST,
                    &format!("/instances/{instance}/rollback"),
                    Some(json!({ "checkpoint": checkpoint })),
                )
                .await?;
            println!(
                "rolled back to {}",
                done["snapshot_id"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln fork INSTANCE --count N`: prints the new instances' ids, one a line, once each
/// is ready (or says which is not).
pub async fn fork(
    config: &Config,
    server: Server,
    instance: &str,
    count: u32,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(config, server)?;
    let forked = client
        .call_v1(
            Method::POST,
            &format!("/instances/{instance}/fork"),
            Some(json!({ "count": count })),
        )
        .await?;
    let mut all_ready = true;
    for made in forked["instances"].as_array().into_iter().flatten() {
        let id = made["instance_id"].as_str().context("no instance_id")?;
        // GET long-polls while the session is creating.
        let status = loop {
            let s = client
                .call(Method::GET, &format!("/sessions/{id}"), None)
                .await?;
            if s["status"] != "creating" {
                break s["status"].as_str().unwrap_or_default().to_string();
            }
        };
        if status == "ready" {
            println!("{id}");
        } else {
            all_ready = false;
            eprintln!("{id} is {status}");
        }
    }
    Ok(if all_ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_instance(instance: &Value) -> anyhow::Result<()> {
    let id = instance["instance_id"]
        .as_str()
        .context("no instance_id in the reply")?;
    println!("{id} {}", instance["status"].as_str().unwrap_or_default());
    Ok(())
}
