//! Second factors under `/v1/auth` (document 002): TOTP enrolment, the sign-in's second
//! step, backup codes, factor list and removal. SMS and phone answer 501.
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Client;
use super::auth_models::*;
use crate::cookies::CookieMode;
use crate::error::ApiResult;
use crate::extract::{OptionalJson, SignedIn, ValidJson, ValidPath, ValidQuery};
use crate::models::{ErrorBody, HTTPValidationError};
use crate::AppState;

pub fn routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(login_mfa))
        .routes(routes!(mfa_state))
        .routes(routes!(totp_begin))
        .routes(routes!(totp_finish))
        .routes(routes!(factors))
        .routes(routes!(remove_factor))
        .routes(routes!(regenerate_backup_codes))
        .routes(routes!(sms_enroll))
        .routes(routes!(sms_verify))
        .routes(routes!(send_code))
        .routes(routes!(phone_send_code))
        .routes(routes!(recovery_request))
        .routes(routes!(recovery_complete))
}

const RECOVERY_ANSWER: &str = "if an account with a second factor has this address, a \
recovery link is on its way; it works only after a cooldown, and a sign-in with the second \
factor meanwhile cancels it";

/// Lost the authenticator and the backup codes: mail a recovery link that works after a
/// cooldown (`accounts.mfa_recovery_cooldown_secs`, 24 h). The answer is the same whether
/// or not an account exists.
#[utoipa::path(post, path = "/auth/recovery/request", tag = "auth", request_body = ForgotPasswordRequest,
    responses((status = 200, body = MessageResponse), (status = 422, body = HTTPValidationError),
              (status = 429, body = ErrorBody)))]
pub async fn recovery_request(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    ValidJson(req): ValidJson<ForgotPasswordRequest>,
) -> ApiResult<Json<MessageResponse>> {
    state
        .kiln
        .accounts
        .request_mfa_recovery(&req.email, &client)
        .await?;
    Ok(Json(MessageResponse {
        message: RECOVERY_ANSWER.into(),
    }))
}

/// Use a recovery link once its cooldown has passed: every second factor and backup code
/// is removed and every sign-in ends (sign in again, then enrol a factor again). Before
/// the cooldown: 409 `recovery_cooldown`.
#[utoipa::path(post, path = "/auth/recovery/complete", tag = "auth", request_body = TokenRequest,
    responses((status = 200, body = RecoveredResponse),
              (status = 400, description = "invalid_token", body = ErrorBody),
              (status = 409, description = "recovery_cooldown", body = ErrorBody),
              (status = 422, body = HTTPValidationError)))]
pub async fn recovery_complete(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    ValidJson(req): ValidJson<TokenRequest>,
) -> ApiResult<Json<RecoveredResponse>> {
    let done = state
        .kiln
        .accounts
        .complete_mfa_recovery(&req.token)
        .await?;
    let details = serde_json::json!({"factors_removed": done.factors_removed});
    state
        .kiln
        .orgs
        .record_as(
            &done.user_id,
            None,
            "auth.mfa_recovered",
            None,
            &client,
            Some(details),
        )
        .await?;
    Ok(Json(RecoveredResponse {
        factors_removed: done.factors_removed,
        sessions_ended: done.sessions_ended,
    }))
}

/// Finish a sign-in with a TOTP code or a backup code (each accepted once).
#[utoipa::path(post, path = "/auth/login/mfa", tag = "auth",
    params(("X-Kiln-Session" = Option<String>, Header, description = "`cookie`: a browser's sign-in, answered in HttpOnly cookies (`kiln_session`, `kiln_refresh`) and a `kiln_csrf` cookie whose value later requests that change something send in `X-CSRF-Token`; the body's tokens are then empty")), request_body = LoginMfaRequest,
    responses((status = 200, body = SignInResponse), (status = 401, body = ErrorBody),
              (status = 422, body = HTTPValidationError)))]
pub async fn login_mfa(
    State(state): State<Arc<AppState>>,
    Client(client): Client,
    mode: CookieMode,
    ValidJson(req): ValidJson<LoginMfaRequest>,
) -> ApiResult<(HeaderMap, Json<SignInResponse>)> {
    let signed = state
        .kiln
        .accounts
        .login_mfa(&req.challenge_token, &req.code, &client)
        .await?;
    let me = state
        .kiln
        .auth
        .authenticate(&signed.tokens.access_token)
        .await?;
    let details = serde_json::json!({"mfa": true});
    state
        .kiln
        .orgs
        .record_account(&me, "auth.signed_in", &client, Some(details))
        .await?;
    let view = state.kiln.accounts.me(&me).await?.into();
    let mut answer = SignInResponse::new(signed, view);
    let cookies = super::auth::handed_over(&state, &mode, &mut answer);
    Ok((cookies, Json(answer)))
}

/// The factors and expiry of a pending sign-in challenge.
#[utoipa::path(get, path = "/auth/login/mfa/state", tag = "auth", params(ChallengeQuery),
    responses((status = 200, body = MfaStateResponse), (status = 401, body = ErrorBody),
              (status = 422, body = HTTPValidationError)))]
pub async fn mfa_state(
    State(state): State<Arc<AppState>>,
    ValidQuery(q): ValidQuery<ChallengeQuery>,
) -> ApiResult<Json<MfaStateResponse>> {
    let (factors, expires_at) = state.kiln.accounts.mfa_state(&q.challenge_token).await?;
    Ok(Json(MfaStateResponse {
        factors,
        expires_at,
    }))
}

/// Begin a TOTP enrolment: a secret and its `otpauth://` URI (for a QR code).
#[utoipa::path(post, path = "/auth/mfa/totp/enroll/begin", tag = "auth",
    responses((status = 200, body = TotpBeginResponse), (status = 409, body = ErrorBody)),
    security(("HTTPBearer" = [])))]
pub async fn totp_begin(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
) -> ApiResult<Json<TotpBeginResponse>> {
    let e = state.kiln.accounts.totp_begin(&me).await?;
    Ok(Json(TotpBeginResponse {
        factor_id: e.factor_id,
        secret: e.secret_base32,
        otpauth_uri: e.otpauth_uri,
    }))
}

/// Finish a TOTP enrolment with a code from the app.
#[utoipa::path(post, path = "/auth/mfa/totp/enroll/finish", tag = "auth", request_body = TotpFinishRequest,
    responses((status = 200, body = TotpFinishResponse), (status = 404, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn totp_finish(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    Client(client): Client,
    ValidJson(req): ValidJson<TotpFinishRequest>,
) -> ApiResult<Json<TotpFinishResponse>> {
    let backup_codes = state
        .kiln
        .accounts
        .totp_finish(&me, &req.factor_id, &req.code)
        .await?;
    let details = serde_json::json!({"factor_id": req.factor_id, "kind": "totp"});
    state
        .kiln
        .orgs
        .record_account(&me, "mfa.enrolled", &client, Some(details))
        .await?;
    Ok(Json(TotpFinishResponse {
        factor_id: req.factor_id,
        backup_codes,
    }))
}

/// The caller's second factors and how many backup codes are left.
#[utoipa::path(get, path = "/auth/mfa/factors", tag = "auth",
    responses((status = 200, body = FactorListResponse)), security(("HTTPBearer" = [])))]
pub async fn factors(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
) -> ApiResult<Json<FactorListResponse>> {
    let list = state.kiln.accounts.factors(&me).await?;
    Ok(Json(FactorListResponse {
        factors: list
            .factors
            .into_iter()
            .map(|f| FactorView {
                id: f.factor_id,
                kind: f.kind,
                created_at: f.created_at,
                last_used_at: f.last_used_at,
            })
            .collect(),
        backup_codes_remaining: list.backup_codes_remaining,
    }))
}

/// Remove a factor (the password again; with the last factor, the backup codes go too).
#[utoipa::path(post, path = "/auth/mfa/factors/{id}/remove", tag = "auth", params(("id" = String, Path)),
    request_body = PasswordRequest,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "no password sign-in", body = ErrorBody), (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn remove_factor(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    Client(client): Client,
    ValidPath(id): ValidPath<String>,
    OptionalJson(req): OptionalJson<PasswordRequest>,
) -> ApiResult<StatusCode> {
    state
        .kiln
        .accounts
        .remove_factor(&me, &id, req.password.as_deref())
        .await?;
    let details = serde_json::json!({"factor_id": id});
    state
        .kiln
        .orgs
        .record_account(&me, "mfa.removed", &client, Some(details))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// New backup codes; the old ones stop working (the password again).
#[utoipa::path(post, path = "/auth/mfa/backup-codes/regenerate", tag = "auth", request_body = PasswordRequest,
    responses((status = 200, body = BackupCodesResponse), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody),
              (status = 422, body = HTTPValidationError)),
    security(("HTTPBearer" = [])))]
pub async fn regenerate_backup_codes(
    State(state): State<Arc<AppState>>,
    SignedIn(me): SignedIn,
    OptionalJson(req): OptionalJson<PasswordRequest>,
) -> ApiResult<Json<BackupCodesResponse>> {
    let backup_codes = state
        .kiln
        .accounts
        .regenerate_backup_codes(&me, req.password.as_deref())
        .await?;
    Ok(Json(BackupCodesResponse { backup_codes }))
}

/// SMS factors: 501 `sms_not_supported` (no SMS provider).
#[utoipa::path(post, path = "/auth/mfa/sms/enroll", tag = "auth",
    responses((status = 501, body = ErrorBody)))]
pub async fn sms_enroll(State(state): State<Arc<AppState>>) -> ApiResult<StatusCode> {
    state.kiln.accounts.sms_unsupported()?;
    Ok(StatusCode::NO_CONTENT)
}

/// SMS factors: 501 `sms_not_supported`.
#[utoipa::path(post, path = "/auth/mfa/sms/verify", tag = "auth",
    responses((status = 501, body = ErrorBody)))]
pub async fn sms_verify(State(state): State<Arc<AppState>>) -> ApiResult<StatusCode> {
    state.kiln.accounts.sms_unsupported()?;
    Ok(StatusCode::NO_CONTENT)
}

/// Codes by SMS at sign-in: 501 `sms_not_supported`.
#[utoipa::path(post, path = "/auth/login/mfa/send-code", tag = "auth",
    responses((status = 501, body = ErrorBody)))]
pub async fn send_code(State(state): State<Arc<AppState>>) -> ApiResult<StatusCode> {
    state.kiln.accounts.sms_unsupported()?;
    Ok(StatusCode::NO_CONTENT)
}

/// Phone numbers: 501 `sms_not_supported`.
#[utoipa::path(post, path = "/auth/phone/send-code", tag = "auth",
    responses((status = 501, body = ErrorBody)))]
pub async fn phone_send_code(State(state): State<Arc<AppState>>) -> ApiResult<StatusCode> {
    state.kiln.accounts.sms_unsupported()?;
    Ok(StatusCode::NO_CONTENT)
}
