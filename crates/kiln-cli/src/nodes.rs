//! `kiln nodes …`: the node registry of a running server on PostgreSQL
//! (`/v1/admin/servers`, admins).
use std::process::ExitCode;

use clap::Subcommand;
use kiln_config::Config;
use reqwest::Method;
use serde_json::Value;

use crate::client::{Client, Server};

#[derive(Subcommand)]
pub enum NodesCommand {
    /// List the servers sharing the database: id, status, live sessions of capacity,
    /// last heartbeat, address.
    List,
    /// Drain a server: no new sessions are placed on it; its live ones run to their end.
    Drain { id: String },
}

pub async fn run(
    config: &Config,
    server: Server,
    command: NodesCommand,
) -> anyhow::Result<ExitCode> {
    let client = Client::v1(config, server)?;
    match command {
        NodesCommand::List => {
            let list = client.call(Method::GET, "/admin/servers", None).await?;
            for node in list["servers"].as_array().into_iter().flatten() {
                println!("{}", line(node));
            }
        }
        NodesCommand::Drain { id } => {
            let node = client
                .call(Method::POST, &format!("/admin/servers/{id}/drain"), None)
                .await?;
            println!("{}", line(&node));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn line(node: &Value) -> String {
    format!(
        "{:<24} {:<9} {:>5}/{:<5} {:<28} {}",
        node["id"].as_str().unwrap_or_default(),
        node["status"].as_str().unwrap_or_default(),
        node["live_sessions"],
        node["capacity"]["sessions"],
        node["last_heartbeat_at"].as_str().unwrap_or_default(),
        node["address"].as_str().unwrap_or_default(),
    )
}
