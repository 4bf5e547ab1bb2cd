//! The HTTP path proxy of `path` forwards: `/v1/instances/{id}/ports/{port}/{path}` is
//! passed on to `/{path}` of the service listening on that port inside the instance, over
//! one connection the instance service opens through the sandbox's agent. Method, query,
//! headers and body go in (without hop-by-hop headers and without the caller's
//! `Authorization` and Kiln's sign-in cookies, which are for Kiln only); the answer streams back as it comes. A
//! protocol switch (`Connection: upgrade`, a WebSocket) the service accepts with a 101 is
//! carried both ways afterwards.
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri, Version};
use axum::response::Response;
use http_body_util::Limited;
use hyper_util::rt::TokioIo;

use crate::error::{ApiError, ApiResult};
use crate::extract::{check_range, CurrentUser, ValidPath};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::server::ConnectionSlot;
use crate::AppState;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Call a service inside the instance over HTTP through its `path` forward (any method;
/// the same for `/v1/instances/{id}/ports/{port}/`). Only the instance's owner, with their
/// bearer token. Nothing listening on the port inside is a 502.
#[utoipa::path(get, path = "/instances/{id}/ports/{port}/{path}", tag = "ports", operation_id = "proxy_instance_port",
    params(("id" = String, Path, description = "The instance (a session id works too)"),
           ("port" = u16, Path, description = "A port with an open `path` forward"),
           ("path" = String, Path, description = "Passed on as the request's path")),
    responses((status = 200, description = "Whatever the service inside answers, streamed"),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 413, body = ErrorBody), (status = 422, body = HTTPValidationError),
              (status = 429, body = ErrorBody), (status = 502, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn proxy(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath((id, port, _path)): ValidPath<(String, i64, String)>,
    request: Request,
) -> ApiResult<Response> {
    forward(&state, &me.user.user_id, &id, port, request).await
}

/// `proxy` for the root path of the service.
pub async fn proxy_root(
    State(state): State<Arc<AppState>>,
    CurrentUser(me): CurrentUser,
    ValidPath((id, port)): ValidPath<(String, i64)>,
    request: Request,
) -> ApiResult<Response> {
    forward(&state, &me.user.user_id, &id, port, request).await
}

/// Adds the proxy's operation (from its annotation) to the document.
pub fn document(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::Path;
    doc.paths.add_path_operation(
        __path_proxy::path(),
        __path_proxy::methods(),
        __path_proxy::operation(),
    );
}

async fn forward(
    state: &AppState,
    user_id: &str,
    id: &str,
    port: i64,
    mut request: Request,
) -> ApiResult<Response> {
    check_range(&["path", "port"], port, Some(1), Some(65535))?;
    let port = u16::try_from(port).map_err(|_| ApiError::Internal("port range".into()))?;
    let config = &state.kiln.config.ports;
    let max_body = config.max_proxy_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body) {
        return Err(ApiError::PayloadTooLarge(format!(
            "the request body exceeds {max_body} bytes (ports.max_proxy_body_bytes)"
        )));
    }
    // A protocol switch (WebSocket): the caller's side of it, and the protocol asked for,
    // which `upstream_request` would drop with the other hop-by-hop headers.
    let upgrade = upgrade_asked(request.headers()).map(|protocol| {
        let slot = request.extensions().get::<ConnectionSlot>().cloned();
        (
            protocol,
            Switch {
                outside: hyper::upgrade::on(&mut request),
                slot,
            },
        )
    });
    let mut upstream = upstream_request(request, port, id, max_body)?;
    if let Some((protocol, _)) = &upgrade {
        let headers = upstream.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
    let stream = state.kiln.instances.connect_path(user_id, id, port).await?;
    let gateway = |what: &str, e: &dyn std::fmt::Display| {
        ApiError::BadGateway(format!("the service on port {port} {what}: {e}"))
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| gateway("could not be spoken to", &e))?;
    // Drives the connection until the answer's body has been passed on (or, upgraded,
    // hands it over).
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "port proxy connection ended");
        }
    });
    let answer_timeout = Duration::from_secs(config.idle_timeout_secs);
    let answer = tokio::time::timeout(answer_timeout, sender.send_request(upstream))
        .await
        .map_err(|_| gateway("did not answer in time", &format!("{answer_timeout:?}")))?
        .map_err(|e| gateway("closed the connection without an answer", &e))?;
    match upgrade {
        Some((_, switch)) if answer.status() == StatusCode::SWITCHING_PROTOCOLS => {
            Ok(switch_protocols(state, id, port, switch, answer))
        }
        _ => {
            let (mut parts, body) = answer.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Ok(Response::from_parts(parts, Body::new(body)))
        }
    }
}

/// The caller's side of a protocol switch: its connection once switched, and its place
/// under the server's connection caps, held for as long as the switched connection lasts.
struct Switch {
    outside: hyper::upgrade::OnUpgrade,
    slot: Option<ConnectionSlot>,
}

/// The protocol a request asks to switch to (`Connection: upgrade` with `Upgrade`).
fn upgrade_asked(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// The service inside agreed to switch protocols: its 101 goes back to the caller with the
/// headers the switch needs, and once both sides have switched the instance service
/// carries the bytes (idle timeout, connection cap, closed with the forward).
fn switch_protocols(
    state: &AppState,
    id: &str,
    port: u16,
    switch: Switch,
    mut answer: hyper::Response<hyper::body::Incoming>,
) -> Response {
    let inside = hyper::upgrade::on(&mut answer);
    let kiln = state.kiln.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        let _slot = switch.slot;
        match tokio::join!(switch.outside, inside) {
            (Ok(outside), Ok(inside)) => {
                kiln.instances
                    .carry_upgraded(&id, port, TokioIo::new(outside), TokioIo::new(inside))
                    .await;
            }
            (outside, inside) => {
                let error = outside.err().or(inside.err());
                tracing::debug!(error = ?error, "a protocol switch through a port proxy failed");
            }
        }
    });
    let (mut parts, _) = answer.into_parts();
    let protocol = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(protocol) = protocol {
        parts.headers.insert(header::UPGRADE, protocol);
    }
    Response::from_parts(parts, Body::empty())
}

/// The request as the service inside sees it: its own path, no credential for Kiln, no
/// hop-by-hop headers, `Host` naming the port, the prefix it was reached under in
/// `X-Forwarded-Prefix`.
fn upstream_request(
    request: Request,
    port: u16,
    id: &str,
    max_body: u64,
) -> ApiResult<hyper::Request<Body>> {
    let (mut parts, body) = request.into_parts();
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    // The path as the caller wrote it (still percent-encoded), after
    // `/instances/{id}/ports/{port}/` (the router has taken `/v1` off).
    let path = parts.uri.path().splitn(6, '/').nth(5).unwrap_or_default();
    let target = format!("/{path}{query}");
    parts.uri = target.parse::<Uri>().map_err(|e| {
        ApiError::invalid(
            &["path", "path"],
            format!("not a usable path: {e}"),
            "value_error",
        )
    })?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::AUTHORIZATION);
    // Nor Kiln's sign-in cookies (the service's own cookies pass).
    match crate::cookies::without_ours(&parts.headers) {
        Some(kept) => parts.headers.insert(header::COOKIE, kept),
        None => parts.headers.remove(header::COOKIE),
    };
    let host = HeaderValue::from_str(&format!("localhost:{port}"))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    parts.headers.insert(header::HOST, host);
    if let Ok(prefix) = HeaderValue::from_str(&format!("/v1/instances/{id}/ports/{port}")) {
        parts
            .headers
            .insert(HeaderName::from_static("x-forwarded-prefix"), prefix);
    }
    let limit = usize::try_from(max_body).unwrap_or(usize::MAX);
    Ok(hyper::Request::from_parts(
        parts,
        Body::new(Limited::new(body, limit)),
    ))
}

/// Drops the headers that belong to one hop (also used by node-to-node forwarding).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the `Connection` header names are this hop's too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/plain"),
        ] {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type"]);
    }
}
