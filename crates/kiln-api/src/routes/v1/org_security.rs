//! Org security (issue 15): sudo (`POST /v1/auth/sudo`), an org's IP allowlist for its API
//! keys (`/v1/orgs/{org}/ip-allowlist`, where `{org}` may be `me`: the org the request acts
//! in) and the caller's default org (`POST /v1/orgs/{org}/default`).
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Client;
use super::org_security_models::*;
use super::orgs_models::OrgView;
use crate::error::ApiResult;
use crate::extract::{OrgNamed, SignedIn, ValidJson, ValidPath};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(sudo))
        .routes(routes!(get_allowlist, set_allowlist, add_allow_entry))
        .routes(routes!(remove_allow_entry))
        .routes(routes!(set_default_org))
}

/// `me` names the org the request acts in (org key → `X-Org-Slug` → default).
/// Re-verify the password (and a TOTP or backup code when a second factor is enrolled):
/// this sign-in, or this API key, may call destructive routes for `accounts.sudo_ttl_secs`
/// (account deletion, factor removal, e-mail change, org key revocation; without it they
/// answer 403 `sudo_required`). Wrong passwords count with the sign-in failures (429).
#[utoipa::path(post, path = "/auth/sudo", tag = "auth", request_body = SudoRequest,
    responses((status = 200, body = SudoResponse), (status = 401, body = ErrorBody),
              (status = 409, description = "`sudo_unavailable` (a token without a device session) or an account without a password", body = ErrorBody),
              (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn sudo(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    Client(client): Client,
    ValidJson(req): ValidJson<SudoRequest>,
) -> ApiResult<Json<SudoResponse>> {
    let sudo_until = state
        .kiln
        .accounts
        .sudo(&me, &req.password, req.code.as_deref(), &client)
        .await?;
    state
        .kiln
        .orgs
        .record_account(&me, "auth.sudo", &client, None)
        .await?;
    Ok(Json(SudoResponse { sudo_until }))
}

/// The networks the org's API keys may be used from (owners and admins); empty: anywhere.
#[utoipa::path(get, path = "/orgs/{org}/ip-allowlist", tag = "orgs",
    params(("org" = String, Path, description = "id, slug, or `me`")),
    responses((status = 200, body = AllowlistView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn get_allowlist(
    State(state): State<Arc<AppState>>,
    named: OrgNamed,
) -> ApiResult<Json<AllowlistView>> {
    let entries = state
        .kiln
        .orgs
        .ip_allowlist(&named.principal, &named.org)
        .await?;
    Ok(Json(AllowlistView::new(entries)))
}

/// Replace the allowlist (owners and admins). A request with one of the org's API keys
/// from outside it answers 403 `ip_not_allowed`; sign-ins (JWT) are not bound.
#[utoipa::path(put, path = "/orgs/{org}/ip-allowlist", tag = "orgs", request_body = SetAllowlistRequest,
    params(("org" = String, Path, description = "id, slug, or `me`")),
    responses((status = 200, body = AllowlistView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn set_allowlist(
    State(state): State<Arc<AppState>>,
    named: OrgNamed,
    Client(client): Client,
    ValidJson(req): ValidJson<SetAllowlistRequest>,
) -> ApiResult<Json<AllowlistView>> {
    let inputs: Vec<_> = req.entries.into_iter().map(Into::into).collect();
    let entries = state
        .kiln
        .orgs
        .set_ip_allowlist(&named.principal, &named.org, &inputs, &client)
        .await?;
    Ok(Json(AllowlistView::new(entries)))
}

/// Add one network (owners and admins); 409 when listed, 429 past the limit.
#[utoipa::path(post, path = "/orgs/{org}/ip-allowlist", tag = "orgs", request_body = AllowEntryRequest,
    params(("org" = String, Path, description = "id, slug, or `me`")),
    responses((status = 201, body = AllowEntryView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn add_allow_entry(
    State(state): State<Arc<AppState>>,
    named: OrgNamed,
    Client(client): Client,
    ValidJson(req): ValidJson<AllowEntryRequest>,
) -> ApiResult<(StatusCode, Json<AllowEntryView>)> {
    let entry = state
        .kiln
        .orgs
        .add_ip_allow_entry(&named.principal, &named.org, &req.into(), &client)
        .await?;
    Ok((StatusCode::CREATED, Json(entry.into())))
}

#[utoipa::path(delete, path = "/orgs/{org}/ip-allowlist/{entry_id}", tag = "orgs",
    params(("org" = String, Path, description = "id, slug, or `me`"), ("entry_id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn remove_allow_entry(
    State(state): State<Arc<AppState>>,
    named: OrgNamed,
    Client(client): Client,
    ValidPath((_org, entry_id)): ValidPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state
        .kiln
        .orgs
        .remove_ip_allow_entry(&named.principal, &named.org, &entry_id, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Make this org the caller's default: where their sign-ins and personal keys act without
/// `X-Org-Slug`. A non-member gets 404.
#[utoipa::path(post, path = "/orgs/{org}/default", tag = "orgs",
    params(("org" = String, Path)),
    responses((status = 200, body = OrgView), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn set_default_org(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidPath(org): ValidPath<String>,
) -> ApiResult<Json<OrgView>> {
    let ctx = state.kiln.orgs.set_default(&me, &org).await?;
    Ok(Json(OrgView::from_context(ctx)))
}
