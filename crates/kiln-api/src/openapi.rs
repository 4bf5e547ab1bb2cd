//! The OpenAPI document, generated from the handlers' annotations; `tests/contract.rs`
//! checks it against the Codeset contract in `spec/codeset-openapi.json`.
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, OpenApi as OpenApiDoc, Ref, RefOr, Response, ResponseBuilder,
};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Kiln (Codeset API)", description = "Sandboxed environments for coding agents, graded like SWE-bench."),
    servers((url = "/api/v1")),
    modifiers(&BearerAuth),
    components(schemas(crate::routes::samples_models::VerificationTool, crate::models::ErrorInfo, crate::models::ValidationError,
        crate::models::ErrorBody, crate::models::HTTPValidationError))
)]
struct ApiDoc;

/// The `/v1` instance API's document, served at `/v1/openapi.json`: a document of its
/// own because its server root differs, and the Codeset one must stay the contract.
#[derive(OpenApi)]
#[openapi(
    info(title = "Kiln (instances API)", description = "Instances: sandboxes to run commands in, edit, snapshot, fork and reach."),
    servers((url = "/v1")),
    modifiers(&BearerAuth),
    components(schemas(crate::models::ErrorInfo, crate::models::ValidationError,
        crate::models::ErrorBody, crate::models::HTTPValidationError))
)]
struct V1Doc;

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

pub(crate) fn v1_base() -> OpenApiDoc {
    V1Doc::openapi()
}

/// Adds the error responses that do not depend on the handler, so that no operation can
/// answer a status its document does not list: 401 (with `WWW-Authenticate`) and 403 (a
/// deactivated account) wherever a credential is required (`CurrentUser`), 422 wherever
/// a parameter or body is parsed (`ValidJson`/`ValidQuery`/`ValidPath`), 413 wherever a
/// body is read (the body limit). Handler-specific statuses (404, 409, 429, 503, …) stay
/// in the handlers' annotations. Checked by API fuzzing: `tests/fuzz` (schemathesis).
pub(crate) fn document_errors(doc: &mut OpenApiDoc) {
    for (path, item) in doc.paths.paths.iter_mut() {
        // Every route but the health checks sits behind the rate limiter (`rate_limit.rs`).
        let rate_limited = !(path.ends_with("/health") || path.contains("/health/"));
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            add_error_responses(op, rate_limited);
        }
    }
}

fn add_error_responses(op: &mut Operation, rate_limited: bool) {
    let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_body = op.request_body.is_some();
    let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let responses = &mut op.responses.responses;
    let mut add = |status: &str, description: &str, schema: &str| {
        responses
            .entry(status.into())
            .or_insert_with(|| error_response(description, schema).into());
    };
    if secured {
        add(
            "401",
            "the credential is missing, malformed, invalid, revoked or expired",
            "ErrorBody",
        );
        add("403", "the account is deactivated", "ErrorBody");
    }
    if has_body {
        add(
            "413",
            "the request body exceeds the server's limit",
            "ErrorBody",
        );
    }
    if has_body || has_params {
        add("422", "Validation Error", "HTTPValidationError");
    }
    if rate_limited {
        add(
            "429",
            "too many requests from this key or address (`rate_limited`)",
            "ErrorBody",
        );
    }
    // The headers `ApiError` sets, on every response that carries them (annotations too).
    for (status, name, description) in [
        ("401", "WWW-Authenticate", "`Bearer`: how to authenticate"),
        ("429", "Retry-After", "seconds to wait before trying again"),
    ] {
        if let Some(RefOr::T(response)) = responses.get_mut(status) {
            response
                .headers
                .entry(name.into())
                .or_insert_with(|| HeaderBuilder::new().description(Some(description)).build());
        }
    }
}

fn error_response(description: &str, schema: &str) -> Response {
    let body: RefOr<_> = Ref::from_schema_name(schema).into();
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(body)).build(),
        )
        .build()
}

/// The complete document, as served at `/api/v1/openapi.json`.
pub fn openapi() -> OpenApiDoc {
    crate::api_routes().split_for_parts().1
}

/// The instance API's document, as served at `/v1/openapi.json`.
pub fn openapi_v1() -> OpenApiDoc {
    crate::v1_routes().split_for_parts().1
}
