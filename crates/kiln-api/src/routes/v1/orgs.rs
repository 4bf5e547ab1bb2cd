//! Organizations (`/v1/orgs`, documents 002 and 004): organizations, members and roles,
//! invitations (`/v1/orgs/{org}/invitations`, `/v1/auth/invitations/{token}`,
//! `/v1/auth/invites/mine`), org API keys and the audit log. `{org}` is an id or a slug;
//! an org the caller does not belong to is a 404, as if it did not exist.
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kiln_domain::OrgRole;
use kiln_services::orgs::Recorded;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Client;
use super::orgs_models::*;
use crate::error::ApiResult;
use crate::extract::{CurrentOrg, OptionalJson, SignedIn, ValidJson, ValidPath, ValidQuery};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(list_orgs, create_org))
        .routes(routes!(current_org))
        .routes(routes!(get_org))
        .routes(routes!(list_members))
        .routes(routes!(change_member, remove_member))
        .routes(routes!(list_invitations, invite))
        .routes(routes!(revoke_invitation))
        .routes(routes!(show_invitation))
        .routes(routes!(accept_invitation))
        .routes(routes!(my_invitations))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(revoke_key))
        .routes(routes!(audit))
}

/// The caller's organizations.
#[utoipa::path(get, path = "/orgs", tag = "orgs",
    responses((status = 200, body = OrgList), (status = 401, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn list_orgs(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
) -> ApiResult<Json<OrgList>> {
    let items = state.kiln.orgs.list(&me).await?;
    Ok(Json(OrgList {
        items: items.into_iter().map(OrgView::from_membership).collect(),
    }))
}

/// Create a team organization; the caller is its owner.
#[utoipa::path(post, path = "/orgs", tag = "orgs", request_body = CreateOrgRequest,
    responses((status = 201, body = OrgView), (status = 409, description = "slug taken", body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn create_org(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    Client(client): Client,
    ValidJson(req): ValidJson<CreateOrgRequest>,
) -> ApiResult<(StatusCode, Json<OrgView>)> {
    let ctx = state
        .kiln
        .orgs
        .create(&me, &req.name, req.slug.as_deref(), &client)
        .await?;
    Ok((StatusCode::CREATED, Json(OrgView::from_context(ctx))))
}

/// The organization this request acts in: the API key's org, else `X-Org-Slug`, else the
/// caller's default (document 004).
#[utoipa::path(get, path = "/orgs/current", tag = "orgs",
    params(("X-Org-Slug" = Option<String>, Header, description = "pin the org (JWT callers)")),
    responses((status = 200, body = OrgView), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn current_org(current: CurrentOrg) -> ApiResult<Json<OrgView>> {
    Ok(Json(OrgView::from_context(current.org)))
}

#[utoipa::path(get, path = "/orgs/{org}", tag = "orgs",
    params(("org" = String, Path, description = "id or slug")),
    responses((status = 200, body = OrgView), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn get_org(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidPath(org): ValidPath<String>,
) -> ApiResult<Json<OrgView>> {
    let ctx = state.kiln.orgs.member_context(&me, &org).await?;
    Ok(Json(OrgView::from_context(ctx)))
}

#[utoipa::path(get, path = "/orgs/{org}/members", tag = "members",
    params(("org" = String, Path, description = "id or slug")),
    responses((status = 200, body = MemberList), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn list_members(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidPath(org): ValidPath<String>,
) -> ApiResult<Json<MemberList>> {
    let members = state.kiln.orgs.members(&me, &org).await?;
    Ok(Json(MemberList {
        items: members.into_iter().map(MemberView::from).collect(),
    }))
}

/// Change a member's role (owners and admins; only an owner touches owners). The last
/// owner cannot be demoted (409 `last_owner`).
#[utoipa::path(patch, path = "/orgs/{org}/members/{user_id}", tag = "members", request_body = RoleChange,
    params(("org" = String, Path), ("user_id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn change_member(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    Client(client): Client,
    ValidPath((org, user_id)): ValidPath<(String, String)>,
    ValidJson(req): ValidJson<RoleChange>,
) -> ApiResult<StatusCode> {
    state
        .kiln
        .orgs
        .set_role(&me, &org, &user_id, req.role.into(), &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a member, or leave (your own id). The last owner cannot leave (409).
#[utoipa::path(delete, path = "/orgs/{org}/members/{user_id}", tag = "members",
    params(("org" = String, Path), ("user_id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn remove_member(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    Client(client): Client,
    ValidPath((org, user_id)): ValidPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state
        .kiln
        .orgs
        .remove_member(&me, &org, &user_id, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/orgs/{org}/invitations", tag = "invitations",
    params(("org" = String, Path)),
    responses((status = 200, body = InvitationList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn list_invitations(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidPath(org): ValidPath<String>,
) -> ApiResult<Json<InvitationList>> {
    let found = state.kiln.orgs.invitations(&me, &org).await?;
    let now = chrono::Utc::now();
    Ok(Json(InvitationList {
        items: found
            .into_iter()
            .map(|i| {
                let state = if i.expires_at <= now {
                    "expired"
                } else {
                    "pending"
                };
                InvitationOut::new(i, state)
            })
            .collect(),
    }))
}

/// Invite an address (owners and admins); the token goes out by mail only.
#[utoipa::path(post, path = "/orgs/{org}/invitations", tag = "invitations", request_body = InviteRequest,
    params(("org" = String, Path)),
    responses((status = 201, body = InvitationOut), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn invite(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    Client(client): Client,
    ValidPath(org): ValidPath<String>,
    ValidJson(req): ValidJson<InviteRequest>,
) -> ApiResult<(StatusCode, Json<InvitationOut>)> {
    let role = req.role.map_or(OrgRole::Member, OrgRole::from);
    let created = state
        .kiln
        .orgs
        .invite(&me, &org, &req.email, role, &client)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(InvitationOut::new(created.invitation, "pending")),
    ))
}

#[utoipa::path(delete, path = "/orgs/{org}/invitations/{invitation_id}", tag = "invitations",
    params(("org" = String, Path), ("invitation_id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn revoke_invitation(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    Client(client): Client,
    ValidPath((org, id)): ValidPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state
        .kiln
        .orgs
        .revoke_invitation(&me, &org, &id, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What an invitation token invites to (no sign-in needed: the token is the proof).
#[utoipa::path(get, path = "/auth/invitations/{token}", tag = "invitations",
    params(("token" = String, Path)),
    responses((status = 200, body = InvitationDetail), (status = 404, body = ErrorBody)))]
pub async fn show_invitation(
    State(state): State<Arc<AppState>>,
    ValidPath(token): ValidPath<String>,
) -> ApiResult<Json<InvitationDetail>> {
    Ok(Json(state.kiln.orgs.invitation(&token).await?.into()))
}

/// Accept an invitation to the caller's address: the caller joins the organization.
/// A password account whose address is not verified yet answers 403 `email_not_verified`;
/// spent, revoked and expired invitations answer 409 `invitation_not_pending`.
#[utoipa::path(post, path = "/auth/invitations/{token}/accept", tag = "invitations",
    params(("token" = String, Path)),
    responses((status = 200, body = OrgView),
              (status = 403, description = "`email_not_verified`: verify the invited address first", body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn accept_invitation(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    Client(client): Client,
    ValidPath(token): ValidPath<String>,
) -> ApiResult<Json<OrgView>> {
    let ctx = state.kiln.orgs.accept(&me, &token, &client).await?;
    Ok(Json(OrgView::from_context(ctx)))
}

/// Live invitations to the caller's address (none while a password account's address is
/// not verified).
#[utoipa::path(get, path = "/auth/invites/mine", tag = "invitations",
    responses((status = 200, body = InvitationDetailList), (status = 401, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn my_invitations(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
) -> ApiResult<Json<InvitationDetailList>> {
    let found = state.kiln.orgs.my_invitations(&me).await?;
    Ok(Json(InvitationDetailList {
        items: found.into_iter().map(InvitationDetail::from).collect(),
    }))
}

#[utoipa::path(get, path = "/orgs/{org}/api-keys", tag = "api_keys",
    params(("org" = String, Path)),
    responses((status = 200, body = OrgKeyList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidPath(org): ValidPath<String>,
) -> ApiResult<Json<OrgKeyList>> {
    let keys = state.kiln.orgs.keys(&me, &org).await?;
    Ok(Json(OrgKeyList {
        items: keys.into_iter().map(OrgKeyView::from).collect(),
    }))
}

/// Create an org API key (owners and admins): requests made with it act in this org. The
/// secret is in this answer only.
#[utoipa::path(post, path = "/orgs/{org}/api-keys", tag = "api_keys", request_body = CreateKeyRequest,
    params(("org" = String, Path)),
    responses((status = 201, body = CreatedKey), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn create_key(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    Client(client): Client,
    ValidPath(org): ValidPath<String>,
    OptionalJson(req): OptionalJson<CreateKeyRequest>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    let created = state
        .kiln
        .orgs
        .create_key(&me, &org, req.name, &client)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: created.secret,
            record: created.record.into(),
        }),
    ))
}

#[utoipa::path(delete, path = "/orgs/{org}/api-keys/{key_id}", tag = "api_keys",
    params(("org" = String, Path), ("key_id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    Client(client): Client,
    ValidPath((org, key_id)): ValidPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state
        .kiln
        .orgs
        .revoke_key(&me, &org, &key_id, &client)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The org's audit log, newest first (owners and admins), with filters and a cursor.
#[utoipa::path(get, path = "/orgs/{org}/audit", tag = "audit",
    params(("org" = String, Path), AuditQuery),
    responses((status = 200, body = AuditPageView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidPath(org): ValidPath<String>,
    ValidQuery(q): ValidQuery<AuditQuery>,
) -> ApiResult<Json<AuditPageView>> {
    let query = Recorded {
        since: parse_time("since", q.since.as_deref())?,
        until: parse_time("until", q.until.as_deref())?,
        action: q.action,
        actor_id: q.actor_id,
        cursor: q.cursor,
        limit: q.limit.unwrap_or(50),
    };
    let page = state.kiln.orgs.audit(&me, &org, query).await?;
    Ok(Json(AuditPageView {
        items: page.events.into_iter().map(AuditEventView::from).collect(),
        next_cursor: page.next,
    }))
}
