//! The OpenAPI document, generated from the handlers' annotations; `tests/contract.rs`
//! checks it against the Codeset contract in `spec/codeset-openapi.json`.
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi};
use utoipa_scalar::{Scalar, Servable};

#[derive(OpenApi)]
#[openapi(
    info(title = "Kiln (Codeset API)", description = "Sandboxed environments for coding agents, graded like SWE-bench."),
    servers((url = "/api/v1")),
    modifiers(&BearerAuth),
    components(schemas(crate::models::VerificationTool, crate::models::ErrorInfo, crate::models::ValidationError))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "HTTPBearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key (kiln_…) or a JWT access token"))
                    .build(),
            ),
        );
    }
}

pub(crate) fn base() -> OpenApiDoc {
    ApiDoc::openapi()
}

/// The complete document, as served at `/api/v1/openapi.json`.
pub fn openapi() -> OpenApiDoc {
    crate::api_routes().split_for_parts().1
}

/// A docs UI at `/docs`. Scalar's page loads its script from a CDN in the browser, so
/// the server itself needs no network and ships no frontend bundle.
pub(crate) fn docs_ui(doc: OpenApiDoc) -> Router {
    Router::new().merge(Scalar::with_url("/docs", doc))
}
