-- Password accounts, device sessions, single-use emailed tokens and the mail outbox
-- (SQLite). See ../README.md. Same conventions as 0001: fixed-width UTC TEXT timestamps.
--
-- A password account is a `users` row plus one `account_credentials` row; the user row stays
-- the one identity every other table points at (keys, sessions, ledger), so an organization
-- can later own things through its own membership tables without touching these.

CREATE TABLE account_credentials (
    user_id           TEXT NOT NULL PRIMARY KEY REFERENCES users (user_id),
    email             TEXT NOT NULL,
    -- Lower-cased e-mail: the sign-in name. Unique among live accounts only, so a deleted
    -- account's address can sign up again.
    email_lower       TEXT NOT NULL,
    -- PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`): the parameters travel with it.
    password_hash     TEXT NOT NULL,
    email_verified_at TEXT,
    password_changed_at TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    deleted_at        TEXT
);
CREATE UNIQUE INDEX account_credentials_email_lower ON account_credentials (email_lower)
    WHERE deleted_at IS NULL;

-- One browser or device sign-in. Its id is the refresh family of the JWT pair and the `sid`
-- claim of every access token minted for it: revoking the row stops both at once.
CREATE TABLE device_sessions (
    session_id   TEXT NOT NULL PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (user_id),
    created_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    user_agent   TEXT NOT NULL DEFAULT '',
    ip_address   TEXT NOT NULL DEFAULT '',
    revoked_at   TEXT,
    revoked_reason TEXT
);
CREATE INDEX device_sessions_by_user ON device_sessions (user_id, created_at);

-- Emailed single-use tokens (verify e-mail, reset password, confirm an e-mail change): only
-- the SHA-256 of the secret is kept; a token is spent by one conditional UPDATE.
CREATE TABLE account_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (user_id),
    purpose    TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password', 'change_email')),
    -- The address an e-mail change goes to (change_email) or is verified for (verify_email).
    email      TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
);
CREATE INDEX account_tokens_by_user ON account_tokens (user_id, purpose);

-- Mail to send, written in the same transaction as the token it carries. The sender claims
-- due rows with a lease; after sending, the body (which holds the link) is cleared.
CREATE TABLE mail_outbox (
    mail_id         TEXT    NOT NULL PRIMARY KEY,
    user_id         TEXT,
    to_address      TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    -- The link the mail carries, for `kiln accounts pending-links` when no SMTP is set.
    link            TEXT,
    status          TEXT    NOT NULL CHECK (status IN ('pending', 'sent', 'logged', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT    NOT NULL,
    lease_until     TEXT,
    last_error      TEXT,
    created_at      TEXT    NOT NULL,
    sent_at         TEXT
);
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE status = 'pending';

-- Second factors. A TOTP secret is sealed by the server (kiln-services' secret_box, bound to
-- the factor id); last_used_step is the last accepted 30-second step, so a code is accepted
-- once. A factor counts once confirmed (enrolment finished with a valid code).
CREATE TABLE mfa_factors (
    factor_id      TEXT    NOT NULL PRIMARY KEY,
    user_id        TEXT    NOT NULL REFERENCES users (user_id),
    kind           TEXT    NOT NULL CHECK (kind IN ('totp')),
    secret_sealed  TEXT    NOT NULL,
    created_at     TEXT    NOT NULL,
    confirmed_at   TEXT,
    last_used_step INTEGER,
    last_used_at   TEXT
);
CREATE INDEX mfa_factors_by_user ON mfa_factors (user_id, created_at);

-- Backup codes, as SHA-256 hashes; each is spent once.
CREATE TABLE mfa_backup_codes (
    user_id    TEXT NOT NULL REFERENCES users (user_id),
    code_hash  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    used_at    TEXT,
    PRIMARY KEY (user_id, code_hash)
);

-- The second step of a sign-in: the password was right, a factor is still owed. Only the
-- hash of the challenge token is kept; it is spent by the sign-in it completes.
CREATE TABLE mfa_challenges (
    challenge_hash TEXT    NOT NULL PRIMARY KEY,
    user_id        TEXT    NOT NULL REFERENCES users (user_id),
    created_at     TEXT    NOT NULL,
    expires_at     TEXT    NOT NULL,
    used_at        TEXT,
    failures       INTEGER NOT NULL DEFAULT 0,
    user_agent     TEXT    NOT NULL DEFAULT '',
    ip_address     TEXT    NOT NULL DEFAULT ''
);
