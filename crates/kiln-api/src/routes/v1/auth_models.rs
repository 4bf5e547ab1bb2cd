//! Shapes of `/v1/auth` (accounts, device sessions).
use chrono::{DateTime, Utc};
use kiln_domain::DeviceSession;
use kiln_services::accounts::{AccountView, SignIn};
use kiln_services::auth::TokenPair;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::models::{rfc3339, rfc3339_opt};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    #[schema(max_length = 254)]
    pub email: String,
    /// At least `accounts.min_password_chars` (10) characters, at most 256.
    pub password: String,
    /// Display name (1-100 characters); by default the e-mail's local part.
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// Required, unless the browser signed in by cookie (`X-Kiln-Session: cookie`) and
    /// sends its refresh cookie.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    #[serde(default)]
    pub name: Option<String>,
}

/// The password again: deleting a password account needs it (a stolen access token alone
/// cannot delete the account).
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct DeleteMeRequest {
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    pub new_password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotPasswordRequest {
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    pub token: String,
    pub new_password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeEmailRequest {
    pub new_email: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub token: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The token from the mailed link.
    pub token: String,
}

/// The signed-in user.
#[derive(Serialize, ToSchema)]
pub struct MeView {
    pub id: String,
    pub name: String,
    pub email: String,
    pub email_verified: bool,
    /// Whether the account signs in with a password (else: API keys or GitHub only).
    pub has_password: bool,
    pub is_admin: bool,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_login_at: Option<DateTime<Utc>>,
}

impl From<AccountView> for MeView {
    fn from(v: AccountView) -> Self {
        let cred = v.credential.as_ref();
        Self {
            id: v.user.user_id,
            name: v.user.name,
            email: cred.map_or(v.user.email, |c| c.email.clone()),
            email_verified: cred.is_some_and(|c| c.email_verified_at.is_some()),
            has_password: cred.is_some(),
            is_admin: v.user.is_admin,
            created_at: v.user.created_at,
            last_login_at: v.user.last_login_at,
        }
    }
}

/// A token pair (`token_type` is always `bearer`).
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds the access token lives.
    pub expires_in: u64,
}

impl From<TokenPair> for TokenResponse {
    fn from(p: TokenPair) -> Self {
        Self {
            access_token: p.access_token,
            refresh_token: p.refresh_token,
            token_type: "bearer",
            expires_in: p.expires_in,
        }
    }
}

/// A sign-in: its tokens, its device session and the user.
#[derive(Serialize, ToSchema)]
pub struct SignInResponse {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    /// The device session these tokens belong to (`/v1/auth/me/sessions`).
    pub session_id: String,
    pub user: MeView,
}

impl SignInResponse {
    pub fn new(s: SignIn, me: MeView) -> Self {
        Self {
            access_token: s.tokens.access_token,
            refresh_token: s.tokens.refresh_token,
            token_type: "bearer",
            expires_in: s.tokens.expires_in,
            session_id: s.session_id,
            user: me,
        }
    }
}

/// What a completed MFA recovery did.
#[derive(Serialize, ToSchema)]
pub struct RecoveredResponse {
    pub factors_removed: usize,
    pub sessions_ended: u64,
}

#[derive(Serialize, ToSchema)]
pub struct MessageResponse {
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct RevokedResponse {
    /// How many device sessions were ended.
    pub revoked: u64,
}

/// A browser or device sign-in.
#[derive(Serialize, ToSchema)]
pub struct SessionView {
    pub id: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: DateTime<Utc>,
    pub user_agent: String,
    pub ip_address: String,
    /// Whether this is the session of the request.
    pub current: bool,
}

impl SessionView {
    pub fn new(s: DeviceSession, current: Option<&str>) -> Self {
        Self {
            current: current == Some(s.session_id.as_str()),
            id: s.session_id,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            user_agent: s.user_agent,
            ip_address: s.ip_address,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SessionListResponse {
    pub sessions: Vec<SessionView>,
}

/// A sign-in's answer: signed in, or a second factor owed (`mfa_required: true`).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginResponse {
    SignedIn(SignInResponse),
    MfaRequired(MfaRequiredResponse),
}

/// The password was right; finish with `POST /v1/auth/login/mfa` before `expires_at`.
#[derive(Serialize, ToSchema)]
pub struct MfaRequiredResponse {
    pub mfa_required: bool,
    pub challenge_token: String,
    /// `totp`, `backup_code`.
    pub factors: Vec<&'static str>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginMfaRequest {
    pub challenge_token: String,
    /// A 6-digit TOTP code, or a backup code.
    pub code: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChallengeQuery {
    pub challenge_token: String,
}

#[derive(Serialize, ToSchema)]
pub struct MfaStateResponse {
    pub factors: Vec<&'static str>,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: DateTime<Utc>,
}

/// A TOTP enrolment begun: add `otpauth_uri` (or `secret`) to an authenticator app, then
/// finish with a code from it. The secret is shown this once.
#[derive(Serialize, ToSchema)]
pub struct TotpBeginResponse {
    pub factor_id: String,
    /// Base32, for typing in by hand.
    pub secret: String,
    pub otpauth_uri: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpFinishRequest {
    pub factor_id: String,
    pub code: String,
}

/// The enrolled factor; with the account's first factor, its backup codes (shown once,
/// each works once).
#[derive(Serialize, ToSchema)]
pub struct TotpFinishResponse {
    pub factor_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_codes: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct FactorView {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339_opt")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct FactorListResponse {
    pub factors: Vec<FactorView>,
    pub backup_codes_remaining: u64,
}

/// The password again, for changes to the account's protection.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PasswordRequest {
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BackupCodesResponse {
    pub backup_codes: Vec<String>,
}
