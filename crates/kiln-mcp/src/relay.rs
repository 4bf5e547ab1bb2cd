//! `kiln mcp`: MCP over stdio for a local agent, relayed to a Kiln server's `/mcp` with an
//! API key. A relay rather than an in-process Kiln on the data directory: a second process
//! opening the same store and sandbox directory would run its own start-up recovery and
//! reapers against the server's live sandboxes; through the server, a stdio agent gets
//! exactly the HTTP agents' rules (its key's ownership, rate limits, billing).
//!
//! Both ends are rmcp transports: stdio as a server's, streamable HTTP (with the key as
//! bearer) as a client's; messages pass unchanged, so whatever the agent and the server
//! negotiate (protocol version, capabilities, progress) goes through.
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{IntoTransport, StreamableHttpClientTransport, Transport};
use rmcp::RoleServer;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot send to the Kiln server: {0}")]
    Remote(String),
    #[error("cannot write to stdout: {0}")]
    Local(String),
}

/// Relays stdin/stdout to `url` (e.g. `http://127.0.0.1:8000/mcp`) until either side ends.
pub async fn relay_stdio(url: &str, api_key: &str) -> Result<(), RelayError> {
    let mut local = IntoTransport::<RoleServer, _, _>::into_transport(rmcp::transport::stdio());
    let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(api_key);
    let mut remote = StreamableHttpClientTransport::from_config(config);
    let mut pending = tokio::task::JoinSet::new();
    let result = loop {
        tokio::select! {
            from_agent = local.receive() => match from_agent {
                // A send may last as long as the request it carries (a POST answered by an
                // event stream): in a task, so answers keep flowing meanwhile.
                Some(message) => {
                    pending.spawn(remote.send(message));
                }
                None => break Ok(()),
            },
            from_server = remote.receive() => match from_server {
                Some(message) => {
                    if let Err(e) = local.send(message).await {
                        break Err(RelayError::Local(e.to_string()));
                    }
                }
                None => break Ok(()),
            },
            Some(sent) = pending.join_next(), if !pending.is_empty() => {
                match sent {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => break Err(RelayError::Remote(e.to_string())),
                    Err(e) => break Err(RelayError::Remote(e.to_string())),
                }
            }
        }
    };
    let _ = remote.close().await;
    let _ = local.close().await;
    result
}
