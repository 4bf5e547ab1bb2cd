//! `kiln instances …`: the instance API (`/v1/instances`) of a running server.
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Subcommand;
use kiln_config::Config;
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::client::{Client, Server};

#[derive(Subcommand)]
pub enum InstancesCommand {
    /// List your instances, newest first.
    List {
        /// Only this status (repeat for several).
        #[arg(long)]
        status: Vec<String>,
        /// Only instances with this label, as KEY:VALUE (repeat: all must match).
        #[arg(long)]
        label: Vec<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Create an instance from an image (--image) or a sample (--dataset, --sample), wait
    /// until it is ready, and print its id.
    Create {
        /// An image reference in the server's image store (`kiln images list`).
        #[arg(long, conflicts_with_all = ["dataset", "sample"])]
        image: Option<String>,
        #[arg(long, requires = "sample")]
        dataset: Option<String>,
        #[arg(long, requires = "dataset")]
        sample: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// KEY=VALUE (repeat for several).
        #[arg(long)]
        label: Vec<String>,
        #[arg(long)]
        ttl_minutes: Option<u32>,
        /// Cores (0.5 is half a core).
        #[arg(long)]
        cpu: Option<f64>,
        #[arg(long)]
        memory_mib: Option<u64>,
        #[arg(long)]
        disk_mib: Option<u64>,
        /// Print the id at once instead of waiting until it is ready.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show an instance (JSON).
    Get {
        id: String,
        /// While it is creating, wait until it is ready or failed.
        #[arg(long)]
        wait: bool,
    },
    /// Change an instance's name, labels (all replaced) or lifetime.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// KEY=VALUE (repeat); replaces every label.
        #[arg(long)]
        label: Vec<String>,
        /// Its whole lifetime, in minutes from its creation.
        #[arg(long)]
        ttl_minutes: Option<u32>,
    },
    /// Delete (close) an instance.
    Delete { id: String },
}

fn labels(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    pairs
        .iter()
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .with_context(|| format!("a label is KEY=VALUE, not {pair:?}"))?;
            Ok((key.to_string(), json!(value)))
        })
        .collect()
}

pub async fn run(
    config: &Config,
    server: Server,
    command: InstancesCommand,
) -> anyhow::Result<ExitCode> {
    let client = Client::v1(config, server)?;
    match command {
        InstancesCommand::List {
            status,
            label,
            limit,
            offset,
        } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            query.append_pair("limit", &limit.to_string());
            query.append_pair("offset", &offset.to_string());
            for s in &status {
                query.append_pair("status", s);
            }
            for l in &label {
                query.append_pair("label", l);
            }
            let page = client
                .call(Method::GET, &format!("/instances?{}", query.finish()), None)
                .await?;
            for i in page["instances"].as_array().into_iter().flatten() {
                let source = match i["source"]["type"].as_str() {
                    Some("image") => i["source"]["image"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    _ => format!(
                        "{}/{}",
                        i["source"]["dataset"].as_str().unwrap_or_default(),
                        i["source"]["sample_id"].as_str().unwrap_or_default()
                    ),
                };
                println!(
                    "{:<38} {:<10} {:<24} {}  expires {}",
                    i["id"].as_str().unwrap_or_default(),
                    i["status"].as_str().unwrap_or_default(),
                    i["name"].as_str().unwrap_or("-"),
                    source,
                    i["expires_at"].as_str().unwrap_or_default()
                );
            }
            eprintln!(
                "{} of {}",
                page["instances"].as_array().map_or(0, Vec::len),
                page["total"]
            );
        }
        InstancesCommand::Create {
            image,
            dataset,
            sample,
            name,
            label,
            ttl_minutes,
            cpu,
            memory_mib,
            disk_mib,
            no_wait,
        } => {
            let mut body = json!({"labels": labels(&label)?});
            match (image, dataset, sample) {
                (Some(image), None, None) => body["image"] = json!(image),
                (None, Some(dataset), Some(sample)) => {
                    body["dataset"] = json!(dataset);
                    body["sample_id"] = json!(sample);
                }
                _ => bail!("give --image, or --dataset and --sample"),
            }
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            if let Some(ttl) = ttl_minutes {
                body["ttl_minutes"] = json!(ttl);
            }
            if cpu.is_some() || memory_mib.is_some() || disk_mib.is_some() {
                body["resources"] =
                    json!({"cpu": cpu, "memory_mib": memory_mib, "disk_mib": disk_mib});
            }
            let created = client.call(Method::POST, "/instances", Some(body)).await?;
            let id = created["id"]
                .as_str()
                .context("no id in the reply")?
                .to_string();
            if !no_wait {
                let instance = loop {
                    let i = client
                        .call(Method::GET, &format!("/instances/{id}?wait=true"), None)
                        .await?;
                    if i["status"] != "creating" {
                        break i;
                    }
                };
                if instance["status"] != "ready" {
                    bail!(
                        "instance {id} is {}: {}",
                        instance["status"],
                        instance["error"]["message"]
                    );
                }
            }
            println!("{id}");
        }
        InstancesCommand::Get { id, wait } => {
            let instance = client
                .call(Method::GET, &format!("/instances/{id}?wait={wait}"), None)
                .await?;
            println!("{}", serde_json::to_string_pretty(&instance)?);
        }
        InstancesCommand::Update {
            id,
            name,
            label,
            ttl_minutes,
        } => {
            let mut body = json!({});
            if let Some(name) = name {
                body["name"] = json!(name);
            }
            if !label.is_empty() {
                body["labels"] = Value::Object(labels(&label)?);
            }
            if let Some(ttl) = ttl_minutes {
                body["ttl_minutes"] = json!(ttl);
            }
            let instance = client
                .call(Method::PATCH, &format!("/instances/{id}"), Some(body))
                .await?;
            println!("{}", serde_json::to_string_pretty(&instance)?);
        }
        InstancesCommand::Delete { id } => {
            let ended = client
                .call(Method::DELETE, &format!("/instances/{id}"), None)
                .await?;
            println!(
                "{} {}",
                ended["id"].as_str().unwrap_or_default(),
                ended["status"]
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
