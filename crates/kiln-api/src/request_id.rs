//! Request ids and the request span. Every request gets an id: the client's
//! `x-request-id` when it is a short token, else a new UUID. It is answered in the
//! response's `x-request-id` and is a field of the request's span, so every log line and
//! exported trace of the request carries it (as do requests forwarded to another node:
//! the header goes with them).
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{map_request, Next};
use axum::response::Response;
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::field::Empty;
use tracing::Span;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-chosen id kept: enough for a UUID or a trace id with a prefix.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// A client's id is kept only if it cannot garble a log line or a header: short, and
/// made of letters, digits and `-_.:`.
fn sane(id: &HeaderValue) -> bool {
    let id = id.as_bytes();
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

/// Drops an id we will not keep (or several), so that a new one is made.
async fn drop_unfit_id(mut request: Request) -> Request {
    let mut ids = request.headers().get_all(&REQUEST_ID).iter();
    let fit = match (ids.next(), ids.next()) {
        (Some(id), None) => sane(id),
        (None, _) => true,
        (Some(_), Some(_)) => false,
    };
    if !fit {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

/// Probes and scrapes arrive every few seconds: their spans are at debug level, so they
/// are neither logged nor exported at the default `info`.
fn quiet(path: &str) -> bool {
    path.starts_with("/health/") || path == "/metrics"
}

fn request_span(request: &Request) -> Span {
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default();
    let method = request.method().as_str();
    let path = request.uri().path();
    macro_rules! span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "request",
                request_id = id,
                method,
                path,
                route = Empty,
                status = Empty,
                latency_ms = Empty,
            )
        };
    }
    if quiet(path) {
        span!(tracing::Level::DEBUG)
    } else {
        span!(tracing::Level::INFO)
    }
}

fn on_response<B>(response: &axum::http::Response<B>, latency: Duration, span: &Span) {
    let status = response.status().as_u16();
    let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    span.record("status", status);
    span.record("latency_ms", latency_ms);
    if !span.is_disabled() {
        tracing::info!(status, latency_ms, "response");
    }
}

/// Records the matched route (`/v1/instances/{id}`) on the request span: the
/// path names one instance, the route groups them.
pub(crate) async fn record_route(route: MatchedPath, request: Request, next: Next) -> Response {
    Span::current().record("route", route.as_str());
    next.run(request).await
}

/// Wraps `app` in the id layers and the request span (outermost first: drop an unfit id,
/// set one, answer it, then trace).
pub(crate) fn layer(app: Router) -> Router {
    app.layer(
        TraceLayer::new_for_http()
            .make_span_with(request_span)
            .on_response(on_response),
    )
    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
    .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
    .layer(map_request(drop_unfit_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_short_plain_tokens_are_sane() {
        for good in ["abc", "0f8e-11:22.x_y", &"a".repeat(MAX_REQUEST_ID_LEN)] {
            assert!(sane(&HeaderValue::from_str(good).unwrap()), "{good}");
        }
        for bad in [
            "",
            "a b",
            "a\"b",
            "x{}",
            &"a".repeat(MAX_REQUEST_ID_LEN + 1),
        ] {
            assert!(!sane(&HeaderValue::from_str(bad).unwrap()), "{bad}");
        }
    }
}
