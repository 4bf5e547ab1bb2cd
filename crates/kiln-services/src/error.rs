use kiln_store::StoreError;
use thiserror::Error;

/// One input that failed validation. Services name the input only (its path inside the
/// request, e.g. `["ttl_minutes"]`), never where a protocol carried it: the HTTP edge adds
/// that (`body`, `query`) to make FastAPI's `loc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The input's path, e.g. `["ttl_minutes"]` or `["items", "0", "name"]`.
    pub field: Vec<String>,
    pub msg: String,
    /// A machine-readable kind, e.g. `missing`, `int_parsing`, `less_than_equal`.
    pub kind: String,
}

impl FieldError {
    pub fn new(field: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self {
            field: field.iter().map(|s| s.to_string()).collect(),
            msg: msg.into(),
            kind: kind.to_string(),
        }
    }
}

/// What a service can fail with. The HTTP layer maps each variant to a status once.
#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// A 403 clients tell apart by its `code` (`email_not_verified`, `sudo_required`,
    /// `ip_not_allowed`).
    #[error("{message}")]
    Denied { code: &'static str, message: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("invalid input")]
    Validation(Vec<FieldError>),
    #[error("{0}")]
    Conflict(String),
    /// The session's sandbox stopped on its own (killed, out of memory): the session was
    /// terminated and nothing more can run in it.
    #[error("{0}")]
    SandboxLost(String),
    /// A conflict clients tell apart by its `code` (e.g. `resources_fixed`: this backend
    /// cannot change a running instance's resources; `not_made_from_sample`).
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error("{0}")]
    LimitExceeded(String),
    /// A capability this server cannot offer now (e.g. no sandbox runtime on the host).
    #[error("{0}")]
    Unavailable(String),
    /// This node has no room for another sandbox now (admission control): a 503 with
    /// `Retry-After`, never a session that fails later.
    #[error("{message}")]
    Capacity {
        message: String,
        retry_after_secs: u64,
    },
    /// Something the server relays to did not answer as it should (a port forward to
    /// a port where nothing listens inside the instance): a 502 saying what.
    #[error("{0}")]
    BadGateway(String),
    /// The caller's balance does not cover what was asked (billing enabled).
    #[error("{0}")]
    PaymentRequired(String),
    /// A request that is well-formed JSON but unacceptable as a whole (e.g. a webhook
    /// whose signature does not verify); `code` says why, for machines.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// Too many attempts of something guessable (sign-ins) or costly (mails): a 429 with
    /// `Retry-After`.
    #[error("{message}")]
    TooManyAttempts {
        message: String,
        retry_after_secs: u64,
    },
    /// A feature this server does not offer (e.g. SMS factors: no SMS provider): a 501
    /// whose `code` says which.
    #[error("{message}")]
    NotImplemented { code: &'static str, message: String },
    #[error(transparent)]
    Github(#[from] GithubError),
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }

    pub fn invalid(field: &[&str], msg: impl Into<String>, kind: &str) -> Self {
        Self::Validation(vec![FieldError::new(field, msg, kind)])
    }

    /// A refused sandbox admission (`Runtime::reserve`).
    pub(crate) fn admission(e: kiln_runtime::RuntimeError) -> Self {
        match e {
            kiln_runtime::RuntimeError::Capacity {
                message,
                retry_after,
                ..
            } => Self::Capacity {
                message: format!("this server is full, try again later: {message}"),
                retry_after_secs: retry_after.as_secs().max(1),
            },
            other => Self::Internal(other.to_string()),
        }
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// What can go wrong with GitHub; each has its own status and code at the HTTP edge.
#[derive(Debug, Error)]
pub enum GithubError {
    #[error("GitHub sign-in is not configured on this server (set github.client_id and github.client_secret)")]
    NotConfigured,
    #[error("{0}")]
    InvalidState(String),
    #[error("GitHub refused the authorization code: {0}")]
    InvalidCode(String),
    /// GitHub is down, slow, or answered something unreadable.
    #[error("{0}")]
    Unavailable(String),
    /// The user never signed in with GitHub.
    #[error("this account has no GitHub sign-in; sign in with GitHub first")]
    NotLinked,
    /// The stored token cannot be used any more (sealed under another server secret,
    /// revoked on GitHub): only a new sign-in helps.
    #[error("{0}; sign in with GitHub again")]
    SignInAgain(String),
    #[error("{0}")]
    Internal(String),
}
