//! The one place where failures become HTTP responses. Two body shapes, both FastAPI's,
//! because the official SDK and existing Codeset clients parse them:
//! validation errors `{"detail":[{"loc":[…],"msg":…,"type":…}]}` (422) and every other
//! error `{"detail":{"code":…,"message":…}}`. See `docs/API-DESIGN.md` for the table.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_services::github::GithubError;
use kiln_services::ServiceError;
use serde_json::json;

/// One entry of a 422 body, in the shape FastAPI reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where the bad value is, e.g. `["body", "ttl_minutes"]` or `["query", "page"]`.
    pub loc: Vec<String>,
    pub msg: String,
    /// A machine-readable kind, e.g. `missing`, `int_parsing`, `less_than_equal`.
    pub kind: String,
}

impl FieldError {
    pub fn new(loc: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self {
            loc: loc.iter().map(|s| s.to_string()).collect(),
            msg: msg.into(),
            kind: kind.to_string(),
        }
    }
}

/// Where a request carries an input: the first element of FastAPI's `loc`. Services name
/// inputs without it (`kiln_services::FieldError::field`); the route that read the input
/// knows where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Body,
    Query,
}

impl Input {
    fn as_str(self) -> &'static str {
        match self {
            Self::Body => "body",
            Self::Query => "query",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// A 403 with its own code (`ServiceError::Denied`).
    #[error("{message}")]
    Denied { code: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    /// A session whose sandbox died: 409 with its own code, so clients can tell it from
    /// an ordinary closed session and start a new one.
    #[error("{0}")]
    SandboxLost(String),
    /// A 409 with its own code (`ServiceError::Refused`).
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{message}")]
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    /// Over a request rate limit (`rate_limit.rs`), unlike a resource limit above.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    ServiceUnavailable(String),
    /// No room for another sandbox on this node now: 503 with `Retry-After`.
    #[error("{message}")]
    NodeFull {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    PaymentRequired(String),
    /// What the server relays to failed (nothing listens on a forwarded port): 502.
    #[error("{0}")]
    BadGateway(String),
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// GitHub sign-in and repositories; each kind has its own status and code.
    #[error(transparent)]
    Github(GithubError),
    /// 501: a feature this server does not offer; `code` says which.
    #[error("{message}")]
    NotImplemented { code: &'static str, message: String },
    /// Details are logged, never sent: they may name files, queries or secrets.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(loc: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self::Validation(vec![FieldError::new(loc, msg, kind)])
    }

    /// A service's error, its invalid inputs read from `input`. (`?` on a service call
    /// takes them from the body, where most routes carry theirs.)
    pub fn from_service(input: Input) -> impl FnOnce(ServiceError) -> Self {
        move |e| match e {
            ServiceError::Validation(errors) => Self::Validation(
                errors
                    .into_iter()
                    .map(|e| FieldError {
                        loc: std::iter::once(input.as_str().to_string())
                            .chain(e.field)
                            .collect(),
                        msg: e.msg,
                        kind: e.kind,
                    })
                    .collect(),
            ),
            other => other.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_error"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Denied { code, .. } => (StatusCode::FORBIDDEN, code),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::SandboxLost(_) => (StatusCode::CONFLICT, "sandbox_lost"),
            Self::Refused { code, .. } => (StatusCode::CONFLICT, code),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::ServiceUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::NodeFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "node_full"),
            Self::PaymentRequired(_) => (StatusCode::PAYMENT_REQUIRED, "insufficient_balance"),
            Self::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            Self::BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            Self::NotImplemented { code, .. } => (StatusCode::NOT_IMPLEMENTED, code),
            Self::Github(e) => match e {
                GithubError::NotConfigured => {
                    (StatusCode::SERVICE_UNAVAILABLE, "github_not_configured")
                }
                GithubError::InvalidState(_) => (StatusCode::BAD_REQUEST, "invalid_state"),
                GithubError::InvalidCode(_) => (StatusCode::UNAUTHORIZED, "invalid_code"),
                GithubError::Unavailable(_) => (StatusCode::BAD_GATEWAY, "github_unavailable"),
                GithubError::NotLinked => (StatusCode::CONFLICT, "github_not_linked"),
                GithubError::SignInAgain(_) => (StatusCode::CONFLICT, "github_sign_in_again"),
                GithubError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            },
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Unauthorized(m) => Self::Unauthorized(m),
            ServiceError::Forbidden(m) => Self::Forbidden(m),
            ServiceError::Denied { code, message } => Self::Denied { code, message },
            ServiceError::NotFound { what } => Self::NotFound(format!("{what} not found")),
            e @ ServiceError::Validation(_) => Self::from_service(Input::Body)(e),
            ServiceError::Conflict(m) => Self::Conflict(m),
            ServiceError::SandboxLost(m) => Self::SandboxLost(m),
            ServiceError::Refused { code, message } => Self::Refused { code, message },
            ServiceError::LimitExceeded(m) => Self::TooManyRequests {
                message: m,
                retry_after_secs: 60,
            },
            ServiceError::Unavailable(m) => Self::ServiceUnavailable(m),
            ServiceError::Capacity {
                message,
                retry_after_secs,
            } => Self::NodeFull {
                message,
                retry_after_secs,
            },
            ServiceError::PaymentRequired(m) => Self::PaymentRequired(m),
            ServiceError::BadGateway(m) => Self::BadGateway(m),
            ServiceError::BadRequest { code, message } => Self::BadRequest { code, message },
            ServiceError::TooManyAttempts {
                message,
                retry_after_secs,
            } => Self::RateLimited {
                message,
                retry_after_secs,
            },
            ServiceError::NotImplemented { code, message } => {
                Self::NotImplemented { code, message }
            }
            ServiceError::Github(GithubError::Internal(m)) => Self::Internal(m),
            ServiceError::Github(e) => Self::Github(e),
            e @ (ServiceError::Store(_) | ServiceError::Internal(_)) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let body = match &self {
            Self::Validation(errors) => json!({
                "detail": errors
                    .iter()
                    .map(|e| json!({"loc": loc_json(&e.loc), "msg": e.msg, "type": e.kind}))
                    .collect::<Vec<_>>()
            }),
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                json!({"detail": {"code": code, "message": "internal server error; the details are in the server log"}})
            }
            other => json!({"detail": {"code": code, "message": other.to_string()}}),
        };
        let mut response = (status, Json(body)).into_response();
        match &self {
            Self::Unauthorized(_) => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::TooManyRequests {
                retry_after_secs, ..
            }
            | Self::RateLimited {
                retry_after_secs, ..
            }
            | Self::NodeFull {
                retry_after_secs, ..
            } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        response
    }
}

/// FastAPI puts list indices in `loc` as integers.
fn loc_json(loc: &[String]) -> Vec<serde_json::Value> {
    loc.iter()
        .map(|part| match part.parse::<u64>() {
            Ok(i) => json!(i),
            Err(_) => json!(part),
        })
        .collect()
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn locs(e: ApiError) -> Vec<Vec<String>> {
        match e {
            ApiError::Validation(errors) => errors.into_iter().map(|e| e.loc).collect(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn the_edge_says_where_a_service_input_came_from() {
        let bad = || ServiceError::invalid(&["cursor"], "not ours", "value_error");
        assert_eq!(
            locs(ApiError::from_service(Input::Query)(bad())),
            [["query", "cursor"]]
        );
        assert_eq!(locs(ApiError::from(bad())), [["body", "cursor"]]);
        let nested = ServiceError::invalid(&["items", "0"], "no", "missing");
        assert_eq!(locs(nested.into()), [["body", "items", "0"]]);
        assert!(matches!(
            ApiError::from_service(Input::Query)(ServiceError::Conflict("c".into())),
            ApiError::Conflict(_)
        ));
    }
}
