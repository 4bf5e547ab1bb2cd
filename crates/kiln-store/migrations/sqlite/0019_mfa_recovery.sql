-- MFA recovery (issue 15, SQLite): a mailed recovery token (`mfa_recovery`) that works
-- only after a cooldown. SQLite cannot change a CHECK constraint, so the table is rebuilt
-- with the wider one (nothing references it).
CREATE TABLE account_tokens_new (
    token_hash TEXT NOT NULL PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (user_id),
    purpose    TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password', 'change_email', 'mfa_recovery')),
    -- The address an e-mail change goes to (change_email) or is verified for (verify_email).
    email      TEXT,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT
);
INSERT INTO account_tokens_new (token_hash, user_id, purpose, email, created_at, expires_at, used_at)
    SELECT token_hash, user_id, purpose, email, created_at, expires_at, used_at FROM account_tokens;
DROP TABLE account_tokens;
ALTER TABLE account_tokens_new RENAME TO account_tokens;
CREATE INDEX account_tokens_by_user ON account_tokens (user_id, purpose);
