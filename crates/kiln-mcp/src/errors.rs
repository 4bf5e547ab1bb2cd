//! A service's refusal as a tool error: `isError: true` with `{code, message}` (and the
//! fields at fault), which the model reads, rather than a JSON-RPC error, which clients
//! tend to hide. The codes are the HTTP API's (`docs/API-DESIGN.md`).
use kiln_services::ServiceError;
use rmcp::model::CallToolResult;
use serde_json::json;

pub(crate) fn tool_error(error: &ServiceError) -> CallToolResult {
    let code = match error {
        ServiceError::Unauthorized(_) => "unauthorized",
        ServiceError::Forbidden(_) => "forbidden",
        ServiceError::NotFound { .. } => "not_found",
        ServiceError::Validation(_) => "validation_error",
        ServiceError::Conflict(_) => "conflict",
        ServiceError::SandboxLost(_) => "sandbox_lost",
        ServiceError::Refused { code, .. }
        | ServiceError::BadRequest { code, .. }
        | ServiceError::Denied { code, .. } => code,
        ServiceError::LimitExceeded(_) => "limit_exceeded",
        ServiceError::Unavailable(_) => "unavailable",
        ServiceError::Capacity { .. } => "capacity",
        ServiceError::BadGateway(_) => "bad_gateway",
        ServiceError::PaymentRequired(_) => "payment_required",
        _ => "internal_error",
    };
    let message = match error {
        ServiceError::Validation(fields) => fields
            .iter()
            .map(|f| format!("{}: {}", f.field.join("."), f.msg))
            .collect::<Vec<_>>()
            .join("; "),
        // Storage and internal details are the operator's, not the agent's.
        ServiceError::Store(_) | ServiceError::Internal(_) => {
            tracing::error!(error = %error, "MCP tool failed");
            "the server failed; try again later".to_string()
        }
        other => other.to_string(),
    };
    CallToolResult::structured_error(json!({ "code": code, "message": message }))
}

/// A refusal of the tool's own (inputs the services do not see).
pub(crate) fn invalid(message: impl Into<String>) -> CallToolResult {
    CallToolResult::structured_error(json!({
        "code": "validation_error",
        "message": message.into(),
    }))
}
