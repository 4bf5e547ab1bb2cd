//! Any node answers any request (issue 12): a request for a session or instance that
//! another node runs is relayed to that node, and a create goes to the node placement
//! picks (`ClusterService::{owner_of, place_create}`). The hop is HTTP/1.1 to the node's
//! advertised address (in TLS to an `https://` one, see [`Peers`]), over kept-alive
//! pooled connections, with the cluster secret in [`SECRET_HEADER`]; a request
//! carrying the right secret is answered where it lands, so a request is forwarded at
//! most once. Bodies stream both ways (SSE included): nothing is buffered here.
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{Method, Uri, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kiln_services::cluster::{ForwardOutcome, Route};

use crate::error::ApiError;
use crate::routes::v1::ports_proxy::strip_hop_by_hop;
use crate::AppState;

/// Carries the cluster secret on the internal hop.
pub const SECRET_HEADER: &str = "x-kiln-cluster-secret";

/// What a request is about, for routing.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Create,
    Session(&'a str),
    /// A long-poll read of a session's state (the session or instance, an interaction, a
    /// verification job): the store answers it, so with cross-node wake-ups any node can.
    LongPoll(&'a str),
    /// An agent job's result archive, kept on the disk of the node that ran the job.
    AgentJobResult(&'a str),
}

/// Session and instance routes: `POST /api/v1/sessions`, `POST /v1/instances`, and
/// everything under `/api/v1/sessions/{id}` and `/v1/instances/{id}`; and an agent job's
/// result (the rest of an agent job is in the store, which every node reads).
fn target<'a>(method: &Method, path: &'a str) -> Option<Target<'a>> {
    if let Some(rest) = path.strip_prefix("/api/v1/agent-jobs/") {
        return match rest.split_once('/') {
            Some((id, "result")) if method == Method::GET && !id.is_empty() => {
                Some(Target::AgentJobResult(id))
            }
            _ => None,
        };
    }
    let rest = path
        .strip_prefix("/api/v1/sessions")
        .or_else(|| path.strip_prefix("/v1/instances"))?;
    match rest {
        "" | "/" if method == Method::POST => Some(Target::Create),
        _ => {
            let mut parts = rest.strip_prefix('/')?.split('/');
            let id = parts.next().filter(|id| !id.is_empty())?;
            let tail: Vec<&str> = parts.collect();
            let instance = path.starts_with("/v1/instances");
            let long_poll = method == Method::GET
                && match tail.as_slice() {
                    [] => true,
                    ["interactions", i] | ["verify", i] => !instance && !i.is_empty(),
                    _ => false,
                };
            Some(if long_poll {
                Target::LongPoll(id)
            } else {
                Target::Session(id)
            })
        }
    }
}

/// Byte comparison whose time does not depend on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware: answers here, or relays to the node that should answer.
pub async fn route(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let cluster = &state.kiln.cluster;
    let Some(secret) = cluster.forwarding_secret() else {
        return next.run(request).await;
    };
    let forwarded = request
        .headers()
        .get(SECRET_HEADER)
        .is_some_and(|v| same(v.as_bytes(), secret.as_bytes()));
    if forwarded {
        return next.run(request).await;
    }
    let mut request = request;
    let route = match target(request.method(), request.uri().path()) {
        None => return next.run(request).await,
        Some(Target::Create) => {
            let image;
            (request, image) = match image_hint(&state, request).await {
                Ok(read) => read,
                Err(e) => return e.into_response(),
            };
            cluster.place_create(image.as_deref()).await
        }
        Some(Target::LongPoll(_)) if cluster.answers_long_polls_here() => {
            cluster.count_forward(ForwardOutcome::WaitedHere);
            return next.run(request).await;
        }
        Some(Target::Session(id) | Target::LongPoll(id)) => cluster.owner_of(id).await,
        Some(Target::AgentJobResult(id)) => cluster.owner_of_agent_job(id).await,
    };
    let address = match route {
        Ok(Route::Local) => return next.run(request).await,
        Ok(Route::Remote(address)) => address,
        Err(e) => return ApiError::from(e).into_response(),
    };
    // A read keeps its request: if the owner cannot be reached, it is answered here.
    let (outgoing, kept) = if request.method() == Method::GET {
        let mut copy = Request::new(Body::empty());
        *copy.uri_mut() = request.uri().clone();
        *copy.headers_mut() = request.headers().clone();
        (copy, Some(request))
    } else {
        (request, None)
    };
    match (relay(&state.peers, &address, secret, outgoing).await, kept) {
        (Ok(response), _) => {
            cluster.count_forward(ForwardOutcome::Relayed);
            response
        }
        // The owner is gone but not yet marked down: a read is answered from the store
        // (the session as last stored); anything else needs the owner.
        (Err(Hop::Unreachable(_)), Some(request)) => {
            cluster.count_forward(ForwardOutcome::ReadHere);
            next.run(request).await
        }
        (Err(Hop::Unreachable(e) | Hop::Failed(e)), _) => {
            cluster.count_forward(ForwardOutcome::Failed);
            e.into_response()
        }
    }
}

/// The largest create body read for placement's image hint: a create's JSON is far
/// smaller; a larger or unsized one is placed without the hint and passed on untouched.
const HINT_BODY_LIMIT: u64 = 64 * 1024;

/// The image a create asks for, for placement: `image` (an instance from an image), or
/// the image of `dataset`/`sample_id`. The body is read (small ones only) and put back.
async fn image_hint(
    state: &AppState,
    request: Request,
) -> Result<(Request, Option<String>), ApiError> {
    let small = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n <= HINT_BODY_LIMIT);
    if !small {
        return Ok((request, None));
    }
    let (parts, body) = request.into_parts();
    let limit = usize::try_from(HINT_BODY_LIMIT).unwrap_or(usize::MAX);
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        ApiError::Validation(vec![crate::error::FieldError::new(
            &["body"],
            format!("the request body could not be read: {e}"),
            "body_unreadable",
        )])
    })?;
    let text =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let image = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(json) => match (
            text(&json, "image"),
            text(&json, "dataset"),
            text(&json, "sample_id"),
        ) {
            (Some(image), _, _) => Some(image),
            (None, Some(dataset), Some(sample)) => {
                state.kiln.sessions.image_of_sample(&dataset, &sample).await
            }
            _ => None,
        },
        Err(_) => None,
    };
    Ok((Request::from_parts(parts, Body::from(bytes)), image))
}

/// Why a hop gave no answer.
enum Hop {
    /// No connection to the owner could be made.
    Unreachable(ApiError),
    /// Connected, but no answer came.
    Failed(ApiError),
}

fn gateway(address: &str, what: &str, e: &dyn std::fmt::Display) -> ApiError {
    ApiError::BadGateway(format!("the server at {address} {what}: {e}"))
}

/// The client of the hop: kept-alive HTTP/1.1 connections to the other nodes, pooled
/// by the peer's address (after the first request to a peer a hop costs no TCP connect
/// or TLS handshake), in TLS to `https://` addresses (verified against
/// `cluster.tls_ca_file`, else the system's roots), plain to `http://` ones. Built at the
/// first hop, once per server: its trust comes from that server's `[cluster]`.
pub struct Peers {
    cluster: kiln_config::ClusterConfig,
    client: OnceLock<Result<Client<HttpsConnector<HttpConnector>, Body>, String>>,
}

impl Peers {
    pub(crate) fn new(cluster: &kiln_config::ClusterConfig) -> Self {
        Self {
            cluster: cluster.clone(),
            client: OnceLock::new(),
        }
    }

    /// The pool; an unusable `tls_ca_file` (which `kiln serve` refuses at start) fails
    /// every hop with its reason.
    fn client(&self) -> Result<&Client<HttpsConnector<HttpConnector>, Body>, &str> {
        self.client
            .get_or_init(|| {
                let tls = crate::tls::peer_config(&self.cluster).map_err(|e| e.to_string())?;
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(Duration::from_secs(5)));
                connector.set_nodelay(true);
                // The TLS layer below takes `https://` addresses too.
                connector.enforce_http(false);
                let connector = HttpsConnectorBuilder::new()
                    .with_tls_config(tls)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(connector);
                Ok(Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build(connector))
            })
            .as_ref()
            .map_err(String::as_str)
    }
}

/// Why a connection to a peer failed, for the 502: the TLS error when the handshake or
/// the peer's certificate failed (buried under the connector's `io::Error`s, which
/// `source()` does not walk into), else the deepest cause (`Connection refused`).
fn connect_failure(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    let mut cause: Option<&(dyn Error + 'static)> = e.source();
    let mut last = e.to_string();
    while let Some(current) = cause {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return format!("failed the TLS handshake: {tls}");
        }
        last = current.to_string();
        cause = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn Error + 'static)),
            None => current.source(),
        };
    }
    format!("cannot be reached: {last}")
}

/// Sends `request` to the node at `address` (`http://host:port` or `https://…`) and
/// streams the answer back.
async fn relay(
    peers: &Peers,
    address: &str,
    secret: &str,
    request: Request,
) -> Result<Response, Hop> {
    let unusable =
        |e: &dyn std::fmt::Display| Hop::Failed(gateway(address, "has an unusable address", e));
    let base: Uri = address.parse().map_err(|e| unusable(&e))?;
    let authority = base
        .authority()
        .ok_or_else(|| unusable(&"no host"))?
        .clone();
    let scheme = match base.scheme_str() {
        Some("https") => "https",
        Some("http") | None => "http",
        Some(other) => return Err(unusable(&format!("unsupported scheme {other}"))),
    };
    let client = peers.client().map_err(|e| {
        Hop::Failed(ApiError::BadGateway(format!(
            "the server at {address} cannot be spoken to: {e}"
        )))
    })?;
    let (mut parts, body) = request.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    parts.uri = Uri::builder()
        .scheme(scheme)
        .authority(authority.clone())
        .path_and_query(path)
        .build()
        .map_err(|e| Hop::Failed(gateway(address, "was given an unusable path", &e)))?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    let internal = |e: &dyn std::fmt::Display| Hop::Failed(ApiError::Internal(e.to_string()));
    let host = HeaderValue::from_str(authority.as_str()).map_err(|e| internal(&e))?;
    parts.headers.insert(header::HOST, host);
    let secret = HeaderValue::from_str(secret).map_err(|e| internal(&e))?;
    parts
        .headers
        .insert(HeaderName::from_static(SECRET_HEADER), secret);
    let answer = client
        .request(Request::from_parts(parts, body))
        .await
        .map_err(|e| {
            if e.is_connect() {
                // A failed handshake or certificate is unreachable too: no byte of the
                // request went to the peer, so a read may still be answered here.
                Hop::Unreachable(ApiError::BadGateway(format!(
                    "the server at {address} {}",
                    connect_failure(&e)
                )))
            } else {
                Hop::Failed(gateway(
                    address,
                    "closed the connection without an answer",
                    &e,
                ))
            }
        })?;
    let (mut parts, body) = answer.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_and_instance_routes_are_routed_and_others_are_not() {
        let post = Method::POST;
        let get = Method::GET;
        assert_eq!(target(&post, "/api/v1/sessions"), Some(Target::Create));
        assert_eq!(target(&post, "/v1/instances"), Some(Target::Create));
        assert_eq!(target(&get, "/api/v1/sessions"), None);
        assert_eq!(
            target(&get, "/api/v1/sessions/s-1"),
            Some(Target::LongPoll("s-1"))
        );
        assert_eq!(
            target(&get, "/api/v1/sessions/s-1/interactions/i-1"),
            Some(Target::LongPoll("s-1"))
        );
        assert_eq!(
            target(&get, "/api/v1/sessions/s-1/verify/j-1"),
            Some(Target::LongPoll("s-1"))
        );
        assert_eq!(
            target(&get, "/v1/instances/i-2"),
            Some(Target::LongPoll("i-2"))
        );
        assert_eq!(
            target(&Method::DELETE, "/api/v1/sessions/s-1"),
            Some(Target::Session("s-1"))
        );
        assert_eq!(
            target(&get, "/api/v1/sessions/s-1/files"),
            Some(Target::Session("s-1"))
        );
        assert_eq!(
            target(&post, "/api/v1/sessions/s-1/exec"),
            Some(Target::Session("s-1"))
        );
        assert_eq!(
            target(&get, "/v1/instances/i-2/exec/stream"),
            Some(Target::Session("i-2"))
        );
        assert_eq!(target(&get, "/api/v1/sessionsX"), None);
        assert_eq!(target(&get, "/api/v1/datasets"), None);
        assert_eq!(target(&get, "/v1/admin/servers"), None);
        assert_eq!(
            target(&get, "/api/v1/agent-jobs/aj-1/result"),
            Some(Target::AgentJobResult("aj-1"))
        );
        assert_eq!(target(&post, "/api/v1/agent-jobs/aj-1/result"), None);
        assert_eq!(target(&get, "/api/v1/agent-jobs/aj-1"), None);
        assert_eq!(target(&post, "/api/v1/agent-jobs/aj-1/completion"), None);
        assert_eq!(target(&get, "/api/v1/agent-jobs//result"), None);
        assert_eq!(target(&get, "/api/v1/agent-jobs"), None);
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
