//! Password accounts (`/v1/auth`): credentials, device sessions, emailed single-use tokens
//! and the mail outbox.
use chrono::{DateTime, Utc};

/// The password sign-in of a user (`users` keeps the identity; this keeps how to prove it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountCredential {
    pub user_id: String,
    pub email: String,
    /// The Argon2id PHC string; never leaves the services.
    pub password_hash: String,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub password_changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A new password account: its user row and its credential, written together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub user_id: String,
    pub name: String,
    pub email: String,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
}

/// One browser or device sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSession {
    pub session_id: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub user_agent: String,
    pub ip_address: String,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<String>,
}

/// What an emailed token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountTokenPurpose {
    VerifyEmail,
    ResetPassword,
    ChangeEmail,
    /// Removes every second factor, once a cooldown after the request has passed.
    MfaRecovery,
}

impl AccountTokenPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::ResetPassword => "reset_password",
            Self::ChangeEmail => "change_email",
            Self::MfaRecovery => "mfa_recovery",
        }
    }
}

/// An emailed single-use token (only its hash is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountToken {
    pub token_hash: String,
    pub user_id: String,
    pub purpose: AccountTokenPurpose,
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

/// A mail to send: stored in the outbox before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMail {
    pub mail_id: String,
    pub user_id: Option<String>,
    pub to_address: String,
    pub subject: String,
    pub body: String,
    pub link: Option<String>,
    pub status: MailStatus,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailStatus {
    /// Waiting for (another) attempt.
    Pending,
    /// Accepted by the SMTP server.
    Sent,
    /// No SMTP server configured: written to the log, its link kept for an admin.
    Logged,
    /// Every attempt failed.
    Dead,
}

impl MailStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Logged => "logged",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "sent" => Self::Sent,
            "logged" => Self::Logged,
            "dead" => Self::Dead,
            _ => return None,
        })
    }
}

/// What a soft delete did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountDeletion {
    pub api_keys_revoked: u64,
    pub sessions_revoked: u64,
}

/// A second factor (today: TOTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaFactor {
    pub factor_id: String,
    pub user_id: String,
    /// `totp`.
    pub kind: String,
    /// Sealed by the services; never leaves them.
    pub secret_sealed: String,
    pub created_at: DateTime<Utc>,
    /// Unset until enrolment is finished with a valid code.
    pub confirmed_at: Option<DateTime<Utc>>,
    /// The last accepted time step: a code is accepted once.
    pub last_used_step: Option<i64>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A sign-in waiting for its second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaChallenge {
    pub challenge_hash: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub failures: u32,
    pub user_agent: String,
    pub ip_address: String,
}
