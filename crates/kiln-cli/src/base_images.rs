//! `kiln base-images …`: base image families and their pipeline on a running server
//! (`/v1/base-images`, `/v1/images/*`; changes need an admin's key).
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use kiln_config::Config;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Client, Server};

#[derive(Subcommand)]
pub enum BaseImagesCommand {
    /// Every version of every family (or of one), newest first.
    List { family: Option<String> },
    /// Prepare a new version of FAMILY; prints its id (with --wait, once it is prepared).
    Prepare {
        family: String,
        #[command(flatten)]
        source: SourceArgs,
        /// Wait until it is prepared or failed (exit code 1 if failed).
        #[arg(long)]
        wait: bool,
    },
    /// Make a prepared version its family's current one.
    Promote { id: String },
    /// Stop a version being prepared, or discard a prepared one.
    Abort { id: String },
    /// Make the promoted version before FAMILY's current one current again.
    Rollback { family: String },
    /// Delete a version that is not current (and its image).
    Delete { id: String },
}

/// Exactly one source.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct SourceArgs {
    /// A path under the server's `base_images.import_dir`.
    #[arg(long)]
    import: Option<String>,
    /// A registry reference (the registry must be allowed on the server).
    #[arg(long)]
    pull: Option<String>,
    /// An image already in the server's image store.
    #[arg(long)]
    from: Option<String>,
}

impl SourceArgs {
    fn body(&self) -> Value {
        match (&self.import, &self.pull, &self.from) {
            (Some(path), _, _) => json!({ "import": path }),
            (_, Some(reference), _) => json!({ "pull": reference }),
            (_, _, from) => json!({ "from": from }),
        }
    }
}

pub async fn run(
    config: &Config,
    server: Server,
    command: BaseImagesCommand,
) -> anyhow::Result<ExitCode> {
    let client = Client::new(config, server)?;
    let id_body = |id: &str| Some(json!({ "id": id }));
    match command {
        BaseImagesCommand::List { family } => {
            let path = match family {
                Some(family) => format!("/base-images/family/{family}/versions"),
                None => "/base-images".into(),
            };
            // Every page: the listing answers at most 100 versions at a time.
            let mut page = client.call_v1(Method::GET, &path, None).await?;
            loop {
                for image in page["base_images"].as_array().into_iter().flatten() {
                    print_image(image);
                }
                let Some(cursor) = page["next_cursor"].as_str() else {
                    break;
                };
                let next = format!("{path}?cursor={cursor}");
                page = client.call_v1(Method::GET, &next, None).await?;
            }
        }
        BaseImagesCommand::Prepare {
            family,
            source,
            wait,
        } => {
            let body = json!({ "family": family, "source": source.body() });
            let mut image = client
                .call_v1(Method::POST, "/images/prepare", Some(body))
                .await?;
            let id = image["id"].as_str().unwrap_or_default().to_string();
            while wait && image["status"] == "preparing" {
                tokio::time::sleep(Duration::from_millis(500)).await;
                image = client
                    .call_v1(Method::GET, &format!("/base-images/{id}"), None)
                    .await?;
            }
            if image["status"] == "failed" {
                eprintln!(
                    "{id} failed: {}",
                    image["error"].as_str().unwrap_or_default()
                );
                return Ok(ExitCode::FAILURE);
            }
            println!("{id}");
        }
        BaseImagesCommand::Promote { id } => {
            let image = client
                .call_v1(Method::POST, "/images/promote", id_body(&id))
                .await?;
            print_image(&image);
        }
        BaseImagesCommand::Abort { id } => {
            let image = client
                .call_v1(Method::POST, "/images/abort", id_body(&id))
                .await?;
            print_image(&image);
        }
        BaseImagesCommand::Rollback { family } => {
            let path = format!("/base-images/family/{family}/rollback");
            let image = client.call_v1(Method::POST, &path, None).await?;
            print_image(&image);
        }
        BaseImagesCommand::Delete { id } => {
            client
                .call_v1(Method::DELETE, &format!("/base-images/{id}"), None)
                .await?;
            println!("deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_image(image: &Value) {
    let current = if image["current"] == true { "*" } else { " " };
    println!(
        "{current} {:<38} {:<24} {:<10} {}",
        image["id"].as_str().unwrap_or_default(),
        image["reference"].as_str().unwrap_or_default(),
        image["status"].as_str().unwrap_or_default(),
        image["source"].as_str().unwrap_or_default(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_flag_given_is_the_source_sent() {
        let source = |import: Option<&str>, pull: Option<&str>, from: Option<&str>| SourceArgs {
            import: import.map(Into::into),
            pull: pull.map(Into::into),
            from: from.map(Into::into),
        };
        assert_eq!(
            source(Some("a.tar"), None, None).body(),
            json!({"import": "a.tar"})
        );
        assert_eq!(
            source(None, Some("r/x:1"), None).body(),
            json!({"pull": "r/x:1"})
        );
        assert_eq!(
            source(None, None, Some("x:1")).body(),
            json!({"from": "x:1"})
        );
    }
}
