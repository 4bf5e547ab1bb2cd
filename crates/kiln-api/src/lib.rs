//! Kiln's HTTP layer: the Codeset API under `/api/v1`, its OpenAPI document at
//! `/api/v1/openapi.json`, a docs UI at `/docs` and the dashboard at `/`. It knows nothing of Linux: every
//! request is turned into calls on [`kiln_services::Kiln`].
#![forbid(unsafe_code)]

pub mod cookies;
mod dashboard;
pub mod error;
pub mod extract;
pub mod forward;
mod mcp;
pub mod models;
mod openapi;
mod rate_limit;
pub mod request_id;
pub mod routes;
mod server;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::middleware::from_fn_with_state;
use axum::response::IntoResponse;
use axum::{Json, Router};
use kiln_services::Kiln;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::rate_limit::RateLimits;

pub use openapi::{openapi, openapi_v1};

/// What every handler can reach.
pub struct AppState {
    pub kiln: Arc<Kiln>,
    limits: RateLimits,
    /// The hop's client (issue 12).
    peers: forward::Peers,
}

/// The versioned API routes with their OpenAPI description.
fn api_routes() -> OpenApiRouter<Arc<AppState>> {
    use routes::*;
    let mut api = OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health::health))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::startup))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::token))
        .routes(routes!(users::me))
        .routes(routes!(users::accept_terms))
        .routes(routes!(users::create_key, users::revoke_key))
        .routes(routes!(datasets::list))
        .routes(routes!(samples::list))
        .routes(routes!(samples::download))
        .routes(routes!(sessions::create, sessions::list))
        .routes(routes!(sessions::get, sessions::close))
        .routes(routes!(sessions::exec))
        .routes(routes!(sessions::interaction))
        .routes(routes!(sessions::str_replace))
        .routes(routes!(sessions::upload))
        .routes(routes!(sessions::verify))
        .routes(routes!(sessions::verification_job))
        .merge(routes::billing::routes())
        .routes(routes!(agent_jobs::create, agent_jobs::list))
        .routes(routes!(agent_jobs::get))
        .routes(routes!(agent_jobs::completion))
        .routes(routes!(agent_jobs::result))
        .routes(routes!(github::sign_in))
        .routes(routes!(github::authorize))
        .routes(routes!(github::list_repos));
    openapi::document_errors(api.get_openapi_mut());
    api
}

/// The instance API's routes (`/v1`) with their OpenAPI description.
fn v1_routes() -> OpenApiRouter<Arc<AppState>> {
    let mut api = OpenApiRouter::with_openapi(openapi::v1_base()).merge(routes::v1::routes());
    openapi::document_errors(api.get_openapi_mut());
    api
}

/// Serves `doc` and falls back to JSON errors, behind the rate limiter: what every
/// versioned API root shares.
fn finish_api(
    api: Router<Arc<AppState>>,
    doc: Arc<utoipa::openapi::OpenApi>,
    state: &Arc<AppState>,
) -> Router {
    let spec = move || async move { Json(doc.as_ref().clone()) };
    api.route("/openapi.json", axum::routing::get(spec))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn(request_id::record_route))
        .layer(from_fn_with_state(state.clone(), rate_limit::limit))
        .with_state(state.clone())
}

/// The whole application, ready to serve.
pub fn router(kiln: Arc<Kiln>) -> Router {
    router_with_shutdown(kiln, kiln_mcp::CancellationToken::new())
}

/// [`router`], whose long-lived MCP sessions end when `shutdown` is cancelled.
pub fn router_with_shutdown(kiln: Arc<Kiln>, shutdown: kiln_mcp::CancellationToken) -> Router {
    let body_limit = kiln.config.limits.max_body_bytes;
    let limits = RateLimits::new(&kiln.config.server);
    let peers = forward::Peers::new(&kiln.config.cluster);
    let state = Arc::new(AppState {
        kiln,
        limits,
        peers,
    });
    let (api, doc) = api_routes().split_for_parts();
    let doc = Arc::new(doc);
    let (v1, v1_doc) = v1_routes().split_for_parts();
    let metrics = axum::routing::get(routes::metrics::metrics).with_state(state.clone());
    // Document 002 lists the probes at the server's root (where Kubernetes asks them);
    // the same handlers as `/api/v1/health/*`, outside the rate limiter.
    let probes = Router::new()
        .route("/health/live", axum::routing::get(routes::health::live))
        .route("/health/ready", axum::routing::get(routes::health::ready))
        .route(
            "/health/startup",
            axum::routing::get(routes::health::startup),
        )
        .with_state(state.clone());
    let api = finish_api(api, doc.clone(), &state);
    let v1 = finish_api(v1, Arc::new(v1_doc), &state);
    let mut app = Router::new();
    if state.kiln.config.mcp.enabled {
        app = app.merge(mcp::routes(&state, shutdown));
    }
    let app = app
        .nest("/api/v1", api)
        .nest("/v1", v1)
        .route("/metrics", metrics)
        .merge(dashboard::routes())
        .merge(probes)
        .fallback(not_found)
        // Issue 12: a session another node runs is answered by that node.
        .layer(from_fn_with_state(state.clone(), forward::route))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".into()).into_response()
        }));
    request_id::layer(app)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such endpoint: {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// Serves until `shutdown` resolves, then stops accepting and lets in-flight
/// requests finish. Timeouts and connection caps come from `[server]` (`server.rs`), and
/// so does HTTPS (`tls_cert_file`, `tls_key_file`): a certificate or key that cannot be
/// used is an `InvalidInput` error before anything is served.
pub async fn serve(
    kiln: Arc<Kiln>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = kiln.config.server.clone();
    let tls = tls::listener_config(&limits)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?
        .map(tokio_rustls::TlsAcceptor::from);
    // MCP event streams stay open while their clients are connected: ended at shutdown,
    // so the graceful stop does not wait for them.
    let mcp_stop = kiln_mcp::CancellationToken::new();
    let app = router_with_shutdown(kiln, mcp_stop.clone());
    let shutdown = async move {
        shutdown.await;
        mcp_stop.cancel();
    };
    server::serve_router(app, listener, &limits, tls, shutdown).await
}
