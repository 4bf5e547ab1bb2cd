//! Password accounts (`/v1/auth`, document 002): sign-up, sign-in, tokens, the caller's
//! account, its device sessions, and the mailed links (verify, reset, e-mail change).
//! A browser may ask for its sign-in in cookies (`X-Kiln-Session: cookie`, see
//! `cookies.rs`); every route also takes the bearer token of a sign-in (or an API key
//! where it makes sense).
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use kiln_services::accounts::{ClientInfo, LoginOutcome};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth_models::*;
use crate::cookies::CookieMode;
use crate::error::{ApiError, ApiResult};
use crate::extract::{request_address, OptionalJson, SignedIn, ValidJson, ValidPath, ValidQuery};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(refresh))
        .routes(routes!(me, update_me, delete_me))
        .routes(routes!(change_password))
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
        .routes(routes!(verify_email))
        .routes(routes!(change_email))
        .routes(routes!(confirm_email))
        .routes(routes!(export))
        .routes(routes!(sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(revoke_others))
}

/// The client's address (through trusted proxies) and user agent.
pub struct Client(pub ClientInfo);

impl FromRequestParts<Arc<AppState>> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let address = request_address(&parts.extensions, &parts.headers, state);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(Client(ClientInfo {
            address,
            user_agent,
        }))
    }
}

async fn me_view(state: &AppState, user: &kiln_services::auth::Principal) -> ApiResult<MeView> {
    Ok(state.kiln.accounts.me(user).await?.into())
}

/// Create an account with e-mail and password; signs in and mails a verification link.
#[utoipa::path(post, path = "/auth/signup", tag = "auth",
    params(("X-Kiln-Session" = Option<String>, Header, description = "`cookie`: a browser's sign-in, answered in HttpOnly cookies (`kiln_session`, `kiln_refresh`) and a `kiln_csrf` cookie whose value later requests that change something send in `X-CSRF-Token`; the body's tokens are then empty")), request_body = SignupRequest,
    responses((status = 201, body = SignInResponse), (status = 409, description = "address taken", body = ErrorBody),
              (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody)))]
pub async fn signup(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    mode: CookieMode,
    ValidJson(req): ValidJson<SignupRequest>,
) -> ApiResult<(StatusCode, HeaderMap, Json<SignInResponse>)> {
    let name = req.name.clone().unwrap_or_else(|| {
        req.email
            .trim()
            .split('@')
            .next()
            .unwrap_or_default()
            .chars()
            .take(100)
            .collect()
    });
    let signed = state
        .kiln
        .accounts
        .signup(&name, &req.email, &req.password, &client)
        .await?;
    let me = state
        .kiln
        .auth
        .authenticate(&signed.tokens.access_token)
        .await?;
    let view = me_view(&state, &me).await?;
    let mut answer = SignInResponse::new(signed, view);
    let cookies = handed_over(&state, &mode, &mut answer);
    Ok((StatusCode::CREATED, cookies, Json(answer)))
}

/// Sign in with e-mail and password; an account with a second factor answers
/// `mfa_required` and a challenge for `/auth/login/mfa`. Failed attempts are limited per
/// account and per address (429 with `Retry-After`).
#[utoipa::path(post, path = "/auth/login", tag = "auth",
    params(("X-Kiln-Session" = Option<String>, Header, description = "`cookie`: a browser's sign-in, answered in HttpOnly cookies (`kiln_session`, `kiln_refresh`) and a `kiln_csrf` cookie whose value later requests that change something send in `X-CSRF-Token`; the body's tokens are then empty")), request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody),
              (status = 422, body = HTTPValidationError), (status = 429, body = ErrorBody)))]
pub async fn login(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    mode: CookieMode,
    ValidJson(req): ValidJson<LoginRequest>,
) -> ApiResult<(HeaderMap, Json<LoginResponse>)> {
    if req.email.len() > 254 || req.password.len() > 4096 {
        return Err(ApiError::invalid(
            &["body"],
            "field too long",
            "string_too_long",
        ));
    }
    let outcome = state
        .kiln
        .accounts
        .login(&req.email, &req.password, &client)
        .await?;
    let mut cookies = HeaderMap::new();
    let answer = match outcome {
        LoginOutcome::SignedIn(signed) => {
            let me = state
                .kiln
                .auth
                .authenticate(&signed.tokens.access_token)
                .await?;
            state
                .kiln
                .orgs
                .record_account(&me, "auth.signed_in", &client, None)
                .await?;
            let view = me_view(&state, &me).await?;
            let mut answer = SignInResponse::new(signed, view);
            cookies = handed_over(&state, &mode, &mut answer);
            LoginResponse::SignedIn(answer)
        }
        LoginOutcome::MfaRequired {
            challenge_token,
            expires_at,
            factors,
        } => LoginResponse::MfaRequired(MfaRequiredResponse {
            mfa_required: true,
            challenge_token,
            factors,
            expires_at,
        }),
    };
    Ok((cookies, Json(answer)))
}

/// In cookie mode (`X-Kiln-Session: cookie`), the sign-in's tokens as cookies instead of
/// in the body.
pub(super) fn handed_over(
    state: &AppState,
    mode: &CookieMode,
    answer: &mut SignInResponse,
) -> HeaderMap {
    let max_age = state.kiln.config.auth.refresh_token_ttl_secs;
    mode.hand_over(&mut answer.access_token, &mut answer.refresh_token, max_age)
}

/// End this sign-in: its access and refresh tokens stop working at once.
#[utoipa::path(post, path = "/auth/logout", tag = "auth",
    responses((status = 204), (status = 401, body = ErrorBody)), security(("HTTPBearer" = [])))]
pub async fn logout(
    State(state): State<Arc<AppState>>,
    mode: CookieMode,
    SignedIn(me): SignedIn,
) -> ApiResult<(StatusCode, HeaderMap)> {
    state.kiln.accounts.logout(&me).await?;
    Ok((StatusCode::NO_CONTENT, mode.removal()))
}

/// A new token pair for a refresh token (which is spent; reusing it ends the sign-in).
#[utoipa::path(post, path = "/auth/refresh", tag = "auth",
    params(("X-Kiln-Session" = Option<String>, Header, description = "`cookie`: a browser's sign-in, answered in HttpOnly cookies (`kiln_session`, `kiln_refresh`) and a `kiln_csrf` cookie whose value later requests that change something send in `X-CSRF-Token`; the body's tokens are then empty")), request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = ErrorBody),
              (status = 422, body = HTTPValidationError)))]
pub async fn refresh(
    State(state): State<Arc<AppState>>,
    mode: CookieMode,
    headers: HeaderMap,
    ValidJson(req): ValidJson<RefreshRequest>,
) -> ApiResult<(HeaderMap, Json<TokenResponse>)> {
    // A browser signed in by cookie sends its refresh token in the refresh cookie.
    let from_cookie = mode
        .wanted
        .then(|| crate::cookies::cookie(&headers, crate::cookies::REFRESH))
        .flatten();
    let Some(token) = req.refresh_token.as_deref().or(from_cookie) else {
        return Err(ApiError::invalid(
            &["body", "refresh_token"],
            "Field required",
            "missing",
        ));
    };
    if token.len() > 4096 {
        return Err(ApiError::Unauthorized("invalid refresh token".into()));
    }
    let pair = state.kiln.accounts.refresh(token).await?;
    let mut answer = TokenResponse::from(pair);
    let max_age = state.kiln.config.auth.refresh_token_ttl_secs;
    let cookies = mode.hand_over(&mut answer.access_token, &mut answer.refresh_token, max_age);
    Ok((cookies, Json(answer)))
}

/// The caller's account.
#[utoipa::path(get, path = "/auth/me", tag = "auth",
    responses((status = 200, body = MeView), (status = 401, body = ErrorBody)), security(("HTTPBearer" = [])))]
pub async fn me(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
) -> ApiResult<Json<MeView>> {
    Ok(Json(me_view(&state, &me).await?))
}

/// Change the caller's display name.
#[utoipa::path(patch, path = "/auth/me", tag = "auth", request_body = UpdateMeRequest,
    responses((status = 200, body = MeView), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn update_me(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidJson(req): ValidJson<UpdateMeRequest>,
) -> ApiResult<Json<MeView>> {
    let view = state
        .kiln
        .accounts
        .update_me(&me, req.name.as_deref())
        .await?;
    Ok(Json(view.into()))
}

/// Delete the caller's account (soft): every API key is revoked and every sign-in ended
/// at once; the address can sign up again. A password account gives its password.
#[utoipa::path(delete, path = "/auth/me", tag = "auth", request_body = DeleteMeRequest,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 422, body = HTTPValidationError),
              (status = 409, description = "no password sign-in", body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn delete_me(
    State(state): State<Arc<AppState>>,
    mode: CookieMode,
    SignedIn(me): SignedIn,
    OptionalJson(req): OptionalJson<DeleteMeRequest>,
) -> ApiResult<(StatusCode, HeaderMap)> {
    state
        .kiln
        .accounts
        .delete_me(&me, req.password.as_deref())
        .await?;
    // The browser's sign-in cookies go with the account.
    Ok((StatusCode::NO_CONTENT, mode.removal()))
}

/// Change the password; every other sign-in of the account ends.
#[utoipa::path(post, path = "/auth/me/password", tag = "auth", request_body = ChangePasswordRequest,
    responses((status = 200, body = RevokedResponse), (status = 401, body = ErrorBody),
              (status = 422, body = HTTPValidationError),
              (status = 409, description = "no password sign-in", body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn change_password(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidJson(req): ValidJson<ChangePasswordRequest>,
) -> ApiResult<Json<RevokedResponse>> {
    let revoked = state
        .kiln
        .accounts
        .change_password(&me, &req.current_password, &req.new_password)
        .await?;
    Ok(Json(RevokedResponse { revoked }))
}

const FORGOT_ANSWER: &str =
    "if an account has this address, a link to reset its password is on its way";

/// Mail a password reset link. The answer is the same whether or not an account exists.
#[utoipa::path(post, path = "/auth/forgot-password", tag = "auth", request_body = ForgotPasswordRequest,
    responses((status = 200, body = MessageResponse), (status = 422, body = HTTPValidationError),
              (status = 429, body = ErrorBody)))]
pub async fn forgot_password(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    ValidJson(req): ValidJson<ForgotPasswordRequest>,
) -> ApiResult<Json<MessageResponse>> {
    state
        .kiln
        .accounts
        .forgot_password(&req.email, &client)
        .await?;
    Ok(Json(MessageResponse {
        message: FORGOT_ANSWER.into(),
    }))
}

/// Set a new password with the mailed token (once, before it expires); every sign-in ends.
#[utoipa::path(post, path = "/auth/reset-password", tag = "auth", request_body = ResetPasswordRequest,
    responses((status = 200, body = MessageResponse), (status = 400, description = "invalid_token", body = ErrorBody),
              (status = 422, body = HTTPValidationError)))]
pub async fn reset_password(
    State(state): State<Arc<AppState>>,
    ValidJson(req): ValidJson<ResetPasswordRequest>,
) -> ApiResult<Json<MessageResponse>> {
    state
        .kiln
        .accounts
        .reset_password(&req.token, &req.new_password)
        .await?;
    Ok(Json(MessageResponse {
        message: "password changed; sign in with the new one".into(),
    }))
}

/// Verify the account's e-mail address (the link of the verification mail).
#[utoipa::path(get, path = "/auth/verify-email", tag = "auth", params(TokenQuery),
    responses((status = 200, body = MessageResponse), (status = 400, description = "invalid_token", body = ErrorBody),
              (status = 422, body = HTTPValidationError)))]
pub async fn verify_email(
    State(state): State<Arc<AppState>>,
    ValidQuery(q): ValidQuery<TokenQuery>,
) -> ApiResult<Json<MessageResponse>> {
    state.kiln.accounts.verify_email(&q.token).await?;
    Ok(Json(MessageResponse {
        message: "e-mail address verified".into(),
    }))
}

/// Ask to change the e-mail address: a confirmation link goes to the new one. The answer
/// is the same when the address is taken (then nothing is sent).
#[utoipa::path(post, path = "/auth/me/email", tag = "auth", request_body = ChangeEmailRequest,
    responses((status = 200, body = MessageResponse), (status = 401, body = ErrorBody),
              (status = 422, body = HTTPValidationError),
              (status = 409, description = "no password sign-in", body = ErrorBody), (status = 429, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn change_email(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    Client(client): Client,
    ValidJson(req): ValidJson<ChangeEmailRequest>,
) -> ApiResult<Json<MessageResponse>> {
    state
        .kiln
        .accounts
        .request_email_change(&me, &req.new_email, &req.password, &client)
        .await?;
    Ok(Json(MessageResponse {
        message: "a confirmation link is on its way to the new address".into(),
    }))
}

/// Confirm an e-mail change with the mailed token; every sign-in ends (sign in again with
/// the new address).
#[utoipa::path(post, path = "/auth/me/email/confirm", tag = "auth", request_body = TokenRequest,
    responses((status = 200, body = RevokedResponse), (status = 400, description = "invalid_token", body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = HTTPValidationError)))]
pub async fn confirm_email(
    State(state): State<Arc<AppState>>,
    ValidJson(req): ValidJson<TokenRequest>,
) -> ApiResult<Json<RevokedResponse>> {
    let revoked = state.kiln.accounts.confirm_email_change(&req.token).await?;
    Ok(Json(RevokedResponse { revoked }))
}

/// Every record kept about the caller, as one JSON document (secrets redacted).
#[utoipa::path(post, path = "/auth/me/export", tag = "auth",
    responses((status = 200, body = Object), (status = 401, body = ErrorBody)), security(("HTTPBearer" = [])))]
pub async fn export(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(state.kiln.accounts.export(&me).await?))
}

/// The caller's live sign-ins, newest first.
#[utoipa::path(get, path = "/auth/me/sessions", tag = "auth",
    responses((status = 200, body = SessionListResponse), (status = 401, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn sessions(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
) -> ApiResult<Json<SessionListResponse>> {
    let found = state.kiln.accounts.sessions(&me).await?;
    let current = me.session_id.as_deref();
    Ok(Json(SessionListResponse {
        sessions: found
            .into_iter()
            .map(|s| SessionView::new(s, current))
            .collect(),
    }))
}

/// End one sign-in of the caller (another user's is a 404).
#[utoipa::path(delete, path = "/auth/me/sessions/{id}", tag = "auth", params(("id" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)), security(("HTTPBearer" = [])))]
pub async fn revoke_session(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    ValidPath(id): ValidPath<String>,
) -> ApiResult<StatusCode> {
    state.kiln.accounts.revoke_session(&me, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// End every sign-in but this one (with an API key: all of them).
#[utoipa::path(post, path = "/auth/me/sessions/revoke-others", tag = "auth",
    responses((status = 200, body = RevokedResponse), (status = 401, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn revoke_others(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
) -> ApiResult<Json<RevokedResponse>> {
    let revoked = state.kiln.accounts.revoke_other_sessions(&me).await?;
    Ok(Json(RevokedResponse { revoked }))
}
