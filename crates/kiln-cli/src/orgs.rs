//! `kiln orgs …`: the caller's organizations on a running server (`/v1/orgs`), as the
//! holder of the API key (`--api-key`, `KILN_API_KEY`, else the admin key).
use std::process::ExitCode;

use clap::Subcommand;
use kiln_config::Config;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Client, Server};

#[derive(Subcommand)]
pub enum OrgsCommand {
    /// List your organizations: slug, your role, default (*), personal, name.
    List,
    /// Create a team organization (you become its owner).
    Create {
        name: String,
        /// 3-40 of a-z, 0-9 and '-' [default: made from the name].
        #[arg(long)]
        slug: Option<String>,
    },
    /// Invite an address (the token goes out by mail only; see `kiln accounts pending-links`).
    Invite {
        /// The organization's slug or id.
        org: String,
        email: String,
        /// owner, admin or member.
        #[arg(long, default_value = "member")]
        role: String,
    },
    /// Make an organization your default (where requests act without X-Org-Slug).
    Default { org: String },
}

pub async fn run(
    config: &Config,
    server: Server,
    command: OrgsCommand,
) -> anyhow::Result<ExitCode> {
    let client = Client::v1(config, server)?;
    match command {
        OrgsCommand::List => {
            let list = client.call(Method::GET, "/orgs", None).await?;
            for org in list["items"].as_array().into_iter().flatten() {
                println!("{}", line(org));
            }
        }
        OrgsCommand::Create { name, slug } => {
            let body = json!({"name": name, "slug": slug});
            let org = client.call(Method::POST, "/orgs", Some(body)).await?;
            println!("{}", line(&org));
        }
        OrgsCommand::Invite { org, email, role } => {
            let body = json!({"email": email, "role": role});
            let path = format!("/orgs/{org}/invitations");
            let inv = client.call(Method::POST, &path, Some(body)).await?;
            println!(
                "{}  {} invited as {} (expires {})",
                inv["id"].as_str().unwrap_or_default(),
                inv["email"].as_str().unwrap_or_default(),
                inv["role"].as_str().unwrap_or_default(),
                inv["expires_at"].as_str().unwrap_or_default()
            );
        }
        OrgsCommand::Default { org } => {
            let path = format!("/orgs/{org}/default");
            let org = client.call(Method::POST, &path, None).await?;
            println!("{}", line(&org));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn line(org: &Value) -> String {
    let flag = |key: &str, mark: &'static str| if org[key] == true { mark } else { " " };
    format!(
        "{:<32} {:<7} {}{} {}",
        org["slug"].as_str().unwrap_or_default(),
        org["role"].as_str().unwrap_or_default(),
        flag("is_default", "*"),
        flag("personal", "p"),
        org["name"].as_str().unwrap_or_default(),
    )
}
