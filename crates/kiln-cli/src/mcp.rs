//! `kiln mcp`: MCP over stdio for a local agent (Claude Desktop/Code, any MCP client that
//! starts a command), relayed to a running server's `/mcp` with an API key. Why a relay and
//! not an in-process Kiln: see `kiln_mcp::relay`.
use std::process::ExitCode;

use kiln_config::Config;

use crate::client::{Client, Server};

pub(crate) async fn run(config: &Config, server: Server) -> anyhow::Result<ExitCode> {
    let client = Client::new(config, server)?;
    // `--url` names the Codeset API (`…/api/v1`) for every client command; MCP sits at
    // the server's root.
    let root = client.base.strip_suffix("/api/v1").unwrap_or(&client.base);
    let url = format!("{root}/mcp");
    kiln_mcp::relay::relay_stdio(&url, &client.key).await?;
    Ok(ExitCode::SUCCESS)
}
