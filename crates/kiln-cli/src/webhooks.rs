//! `kiln webhooks …`: your webhooks on a running server (`/v1/webhooks`): create (the
//! signing secret is shown once), list, change, delete, their deliveries, a retry of a
//! dead one, and a test event.
use std::process::ExitCode;

use clap::Subcommand;
use kiln_config::Config;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Client, Server};

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Create a webhook; prints its id and its signing secret (shown only this once).
    Create {
        /// Where deliveries are POSTed (http or https).
        #[arg(value_name = "URL")]
        endpoint: String,
        /// An event type to receive (repeat for several; `*` for all).
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// Create it paused (no deliveries until `update --active true`).
        #[arg(long)]
        inactive: bool,
    },
    /// List your webhooks.
    List,
    /// Change a webhook; what is not given stays.
    Update {
        webhook: String,
        /// A new URL to POST deliveries to.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// Replaces every event type (repeat for several).
        #[arg(long = "event")]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        active: Option<bool>,
        /// A new signing secret (printed).
        #[arg(long)]
        rotate_secret: bool,
    },
    /// Delete a webhook (its pending deliveries are dropped).
    Delete { webhook: String },
    /// A webhook's deliveries, newest first.
    Deliveries {
        webhook: String,
        /// Only `pending`, `delivered` or `dead` ones.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Send a dead delivery again.
    Retry { webhook: String, delivery: String },
    /// Queue a `webhook.test` event to a webhook; prints the delivery's id.
    Test { webhook: String },
}

pub async fn run(
    config: &Config,
    server: Server,
    command: WebhooksCommand,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(config, server)?;
    match command {
        WebhooksCommand::Create {
            endpoint,
            events,
            description,
            inactive,
        } => {
            let mut body = json!({ "url": endpoint, "events": events, "active": !inactive });
            if let Some(description) = description {
                body["description"] = json!(description);
            }
            let made = client
                .call_v1(Method::POST, "/webhooks", Some(body))
                .await?;
            print_webhook(&made);
            println!("secret {}", made["secret"].as_str().unwrap_or_default());
        }
        WebhooksCommand::List => {
            let list = client.call_v1(Method::GET, "/webhooks", None).await?;
            for hook in list["webhooks"].as_array().into_iter().flatten() {
                print_webhook(hook);
            }
        }
        WebhooksCommand::Update {
            webhook,
            endpoint,
            events,
            description,
            active,
            rotate_secret,
        } => {
            let mut body = json!({ "rotate_secret": rotate_secret });
            if let Some(endpoint) = endpoint {
                body["url"] = json!(endpoint);
            }
            if !events.is_empty() {
                body["events"] = json!(events);
            }
            if let Some(description) = description {
                body["description"] = json!(description);
            }
            if let Some(active) = active {
                body["active"] = json!(active);
            }
            let changed = client
                .call_v1(Method::PATCH, &format!("/webhooks/{webhook}"), Some(body))
                .await?;
            print_webhook(&changed);
            if let Some(secret) = changed["secret"].as_str() {
                println!("secret {secret}");
            }
        }
        WebhooksCommand::Delete { webhook } => {
            client
                .call_v1(Method::DELETE, &format!("/webhooks/{webhook}"), None)
                .await?;
            println!("deleted");
        }
        WebhooksCommand::Deliveries {
            webhook,
            status,
            limit,
        } => {
            let mut path = format!("/webhooks/{webhook}/deliveries?limit={limit}");
            if let Some(status) = status {
                path.push_str(&format!("&status={status}"));
            }
            let list = client.call_v1(Method::GET, &path, None).await?;
            for d in list["deliveries"].as_array().into_iter().flatten() {
                print_delivery(d);
            }
            if list["has_more"] == true {
                println!("… more (raise --limit)");
            }
        }
        WebhooksCommand::Retry { webhook, delivery } => {
            let retried = client
                .call_v1(
                    Method::POST,
                    &format!("/webhooks/{webhook}/deliveries/{delivery}/retry"),
                    None,
                )
                .await?;
            print_delivery(&retried);
        }
        WebhooksCommand::Test { webhook } => {
            let queued = client
                .call_v1(Method::POST, &format!("/webhooks/{webhook}/test"), None)
                .await?;
            println!("{}", queued["delivery_id"].as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ID active|paused URL EVENTS`
fn print_webhook(hook: &Value) {
    let events: Vec<&str> = hook["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!(
        "{} {} {} {}",
        hook["webhook_id"].as_str().unwrap_or_default(),
        if hook["active"] == true {
            "active"
        } else {
            "paused"
        },
        hook["url"].as_str().unwrap_or_default(),
        events.join(",")
    );
}

/// `ID EVENT STATUS attempts=N [HTTP code] [error]`
fn print_delivery(d: &Value) {
    let mut line = format!(
        "{} {} {} attempts={}",
        d["delivery_id"].as_str().unwrap_or_default(),
        d["event_type"].as_str().unwrap_or_default(),
        d["status"].as_str().unwrap_or_default(),
        d["attempts"].as_u64().unwrap_or_default()
    );
    if let Some(code) = d["last_status_code"].as_u64() {
        line.push_str(&format!(" http={code}"));
    }
    if let Some(error) = d["last_error"].as_str() {
        line.push_str(&format!(" error={error:?}"));
    }
    println!("{line}");
}
