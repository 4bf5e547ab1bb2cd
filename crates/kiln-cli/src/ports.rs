//! `kiln ports …`: reach a service listening inside an instance through a running server
//! (`/v1/instances/{id}/port-forwards`): open a forward on a host port or a path under the
//! API, list the open ones, close one.
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use kiln_config::Config;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Client, Server};

#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    /// A TCP listener on the server's host (printed as HOST:PORT).
    HostPort,
    /// HTTP under the API (printed as a URL; send your API key).
    Path,
}

#[derive(Subcommand)]
pub enum PortsCommand {
    /// Forward PORT inside the instance; prints the forward's id and where to reach it.
    Open {
        instance: String,
        port: u16,
        #[arg(long, value_enum, default_value = "host-port")]
        mode: Mode,
    },
    /// List an instance's open forwards.
    List { instance: String },
    /// Close a forward (its open connections end).
    Close { instance: String, forward: String },
}

pub async fn run(
    config: &Config,
    server: Server,
    command: PortsCommand,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(config, server)?;
    match command {
        PortsCommand::Open {
            instance,
            port,
            mode,
        } => {
            let mode = match mode {
                Mode::HostPort => "host_port",
                Mode::Path => "path",
            };
            let made = client
                .call_v1(
                    Method::POST,
                    &format!("/instances/{instance}/port-forwards"),
                    Some(json!({ "port": port, "mode": mode })),
                )
                .await?;
            print_forward(&made);
        }
        PortsCommand::List { instance } => {
            let list = client
                .call_v1(
                    Method::GET,
                    &format!("/instances/{instance}/port-forwards"),
                    None,
                )
                .await?;
            for forward in list["port_forwards"].as_array().into_iter().flatten() {
                print_forward(forward);
            }
        }
        PortsCommand::Close { instance, forward } => {
            client
                .call_v1(
                    Method::DELETE,
                    &format!("/instances/{instance}/port-forwards/{forward}"),
                    None,
                )
                .await?;
            println!("closed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ID PORT WHERE` (a HOST:PORT or a URL).
fn print_forward(forward: &Value) {
    let reach = forward["host_address"]
        .as_str()
        .or(forward["url"].as_str())
        .unwrap_or_default();
    println!(
        "{} {} {reach}",
        forward["forward_id"].as_str().unwrap_or_default(),
        forward["port"].as_u64().unwrap_or_default()
    );
}
