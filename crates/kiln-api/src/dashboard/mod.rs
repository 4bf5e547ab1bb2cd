//! The web dashboard at `/` and the API reference at `/docs`, both served from files
//! compiled into the binary (`include_bytes!`): nothing is fetched from another server at
//! run time and `cargo build` needs no node. The dashboard is a small vanilla-JS page that
//! calls the same `/api/v1` and `/v1` routes as every client, with the caller's bearer
//! token, so it adds no route of its own that reaches services (see ARCHITECTURE.md,
//! "Dashboard and offline /docs").
use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The dashboard's page: only its own scripts and styles, only its own origin.
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// Redoc injects its styles (styled-components) and may start its search worker from a
/// `blob:` URL; still nothing leaves the origin.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self' blob:; worker-src 'self' blob:; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; frame-ancestors 'none'";

struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    csp: &'static str,
}

const INDEX: Asset = Asset {
    body: include_bytes!("assets/index.html"),
    content_type: "text/html; charset=utf-8",
    csp: DASHBOARD_CSP,
};

/// One of the dashboard's scripts: served with the dashboard's policy.
const fn script(body: &'static [u8]) -> Asset {
    Asset {
        body,
        content_type: "text/javascript; charset=utf-8",
        csp: DASHBOARD_CSP,
    }
}

/// The dashboard's other files, by the name they are served under `/dashboard/`.
const FILES: &[(&str, Asset)] = &[
    ("app.js", script(include_bytes!("assets/app.js"))),
    ("account.js", script(include_bytes!("assets/account.js"))),
    ("team.js", script(include_bytes!("assets/team.js"))),
    ("markdown.js", script(include_bytes!("assets/markdown.js"))),
    ("metrics.js", script(include_bytes!("assets/metrics.js"))),
    (
        "app.css",
        Asset {
            body: include_bytes!("assets/app.css"),
            content_type: "text/css; charset=utf-8",
            csp: DASHBOARD_CSP,
        },
    ),
];

const REDOC: Asset = Asset {
    body: include_bytes!("vendor/redoc.standalone.js"),
    content_type: "text/javascript; charset=utf-8",
    csp: DOCS_CSP,
};

const DOCS_PAGE: &str = include_str!("assets/docs.html");

/// `/`, `/dashboard/{file}`, `/docs` (the Codeset API), `/docs/v1` (the instance API) and
/// the viewer's script.
pub(crate) fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { serve(&INDEX) }))
        .route("/dashboard/{file}", get(dashboard_file))
        .route("/docs", get(|| async { docs_page("/api/v1/openapi.json") }))
        .route("/docs/v1", get(|| async { docs_page("/v1/openapi.json") }))
        .route("/docs/redoc.standalone.js", get(|| async { serve(&REDOC) }))
}

async fn dashboard_file(Path(file): Path<String>) -> Response {
    match FILES.iter().find(|(name, _)| *name == file) {
        Some((_, asset)) => serve(asset),
        None => crate::error::ApiError::NotFound(format!("no such file: /dashboard/{file}"))
            .into_response(),
    }
}

fn docs_page(spec_url: &'static str) -> Response {
    let body = DOCS_PAGE.replace("{{SPEC_URL}}", spec_url);
    respond(body.into_bytes(), "text/html; charset=utf-8", DOCS_CSP)
}

fn serve(asset: &Asset) -> Response {
    respond(asset.body.to_vec(), asset.content_type, asset.csp)
}

fn respond(body: Vec<u8>, content_type: &'static str, csp: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(csp),
            ),
            // A new binary serves new files: the browser revalidates each time.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        ],
        body,
    )
        .into_response()
}
