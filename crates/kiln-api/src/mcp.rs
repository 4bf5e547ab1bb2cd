//! `/mcp`: the MCP server (`kiln-mcp`, streamable HTTP) behind the API's authentication and
//! rate limits. A request without a valid bearer credential is a 401 here and never reaches
//! MCP; one with it reaches the tools as its user ([`kiln_mcp::Caller`]), checked on every
//! request, so an MCP session id leaked to another key gives it nothing of the first's.
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use axum::Router;
use kiln_mcp::{Caller, CancellationToken};

use crate::cookies::bearer_token;
use crate::error::ApiError;
use crate::extract::{org_header, request_address, Authenticated};
use crate::{rate_limit, AppState};

/// The `/mcp` route; `cancel` ends its sessions (and their event streams) at shutdown.
pub(crate) fn routes(state: &Arc<AppState>, cancel: CancellationToken) -> Router {
    let service = kiln_mcp::http_service(state.kiln.clone(), cancel);
    Router::new()
        .route_service("/mcp", service)
        .layer(from_fn_with_state(state.clone(), require_caller))
        .layer(from_fn_with_state(state.clone(), rate_limit::limit))
}

/// Lets through only what the rate limiter authenticated; anything else gets the API's
/// own 401 (with `WWW-Authenticate: Bearer`) saying what was wrong.
async fn require_caller(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = match req.extensions().get::<Authenticated>() {
        Some(Authenticated(principal)) => principal.clone(),
        None => {
            let token = bearer_token(req.headers())?;
            state.kiln.auth.authenticate(token).await?
        }
    };
    let address = request_address(req.extensions(), req.headers(), &state);
    state
        .kiln
        .orgs
        .check_key_address(&principal, &address)
        .await?;
    // The tools act in the request's org, resolved as for every other route (the key's
    // org, else `X-Org-Slug`, else the person's default org): a session a tool opens is
    // that org's, and another member of it sees it.
    let slug = org_header(req.headers())?.map(str::to_string);
    let acting = state.kiln.orgs.acting(principal, slug.as_deref()).await?;
    let user_id = acting.user.user_id;
    req.extensions_mut().insert(Caller { user_id });
    Ok(next.run(req).await)
}
