//! `GET /metrics`: Prometheus's text format, outside `/api/v1` and its OpenAPI document
//! (it is for the operator's scraper, not for API clients). Who may read it: with
//! `server.metrics_token` set, whoever sends `Authorization: Bearer <token>`; without,
//! only clients connecting from a loopback address, and everyone else gets the 404 any
//! unknown path gets, so a public bind shows nothing unless the operator opts in.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use kiln_services::metrics::CONTENT_TYPE;

use crate::error::{ApiError, ApiResult};
use crate::AppState;

pub async fn metrics(State(state): State<Arc<AppState>>, request: Request) -> ApiResult<Response> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let sent = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = state.kiln.config.server.metrics_token.as_ref();
    check_access(peer, token.map(|t| t.expose()), sent)?;
    let text = state.kiln.sessions.render_metrics().await?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        text,
    )
        .into_response())
}

/// With a token configured, a request must carry it (401 otherwise, wherever it comes
/// from); without, it must come from a loopback address (404 otherwise, as for a path
/// that does not exist).
fn check_access(
    peer: Option<IpAddr>,
    token: Option<&str>,
    authorization: Option<&str>,
) -> ApiResult<()> {
    match token {
        Some(token) => {
            let sent = authorization.and_then(|v| v.strip_prefix("Bearer "));
            if sent.is_some_and(|sent| same_secret(sent, token)) {
                Ok(())
            } else {
                Err(ApiError::Unauthorized(
                    "GET /metrics needs the metrics token (server.metrics_token)".into(),
                ))
            }
        }
        None if peer.is_some_and(|ip| ip.to_canonical().is_loopback()) => Ok(()),
        None => Err(ApiError::NotFound("no such endpoint: GET /metrics".into())),
    }
}

/// Compares in time independent of where the two differ (only of their lengths).
fn same_secret(sent: &str, expected: &str) -> bool {
    sent.len() == expected.len()
        && sent
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::check_access;
    use crate::error::ApiError;

    #[test]
    fn loopback_only_without_a_token_and_the_token_with_one() {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        let token = Some("0123456789abcdef");
        for loopback in ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"] {
            assert!(check_access(ip(loopback), None, None).is_ok(), "{loopback}");
        }
        for other in ["10.0.0.1", "192.0.2.7", "2001:db8::1", "::ffff:10.0.0.1"] {
            assert!(
                matches!(
                    check_access(ip(other), None, None),
                    Err(ApiError::NotFound(_))
                ),
                "{other}"
            );
        }
        assert!(matches!(
            check_access(None, None, None),
            Err(ApiError::NotFound(_))
        ));
        // With a token, even loopback needs it.
        for wrong in [
            None,
            Some("Bearer 0123456789abcdeX"),
            Some("0123456789abcdef"),
            Some("Bearer "),
        ] {
            assert!(
                matches!(
                    check_access(ip("127.0.0.1"), token, wrong),
                    Err(ApiError::Unauthorized(_))
                ),
                "{wrong:?}"
            );
        }
        assert!(check_access(ip("192.0.2.7"), token, Some("Bearer 0123456789abcdef")).is_ok());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(super::same_secret("abcdefghijklmnop", "abcdefghijklmnop"));
        assert!(!super::same_secret("abcdefghijklmnoq", "abcdefghijklmnop"));
        assert!(!super::same_secret("abc", "abcdefghijklmnop"));
        assert!(!super::same_secret("", "abcdefghijklmnop"));
    }
}
