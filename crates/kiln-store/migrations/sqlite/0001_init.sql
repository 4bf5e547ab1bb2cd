-- Kiln's first schema (SQLite). Released migrations are never edited: see ../README.md.
--
-- Timestamps are TEXT in one fixed-width UTC form, 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (microseconds,
-- always six digits), written only by the store. Fixed width makes string comparison equal to
-- time comparison, so `expires_at > ?` and ORDER BY work on the column as stored.
-- Booleans are INTEGER 0/1.

CREATE TABLE users (
    user_id           TEXT    NOT NULL PRIMARY KEY,
    name              TEXT    NOT NULL,
    email             TEXT    NOT NULL,
    github_id         TEXT    UNIQUE,
    github_login      TEXT,
    is_admin          INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    is_active         INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at        TEXT    NOT NULL,
    last_login_at     TEXT,
    terms_accepted_at TEXT
);

CREATE TABLE api_keys (
    key_id       TEXT NOT NULL PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    name         TEXT,
    key_hash     TEXT NOT NULL UNIQUE,
    masked       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    revoked_at   TEXT,
    last_used_at TEXT
);
CREATE INDEX api_keys_by_user ON api_keys (user_id, created_at);

CREATE TABLE refresh_tokens (
    token_id   TEXT NOT NULL PRIMARY KEY,
    family_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    issued_at  TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at    TEXT,
    revoked_at TEXT
);
-- Revoking a family and checking whether a family is revoked both go by family.
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);

CREATE TABLE datasets (
    name        TEXT NOT NULL PRIMARY KEY,
    description TEXT,
    created_at  TEXT NOT NULL
);

CREATE TABLE samples (
    dataset             TEXT    NOT NULL REFERENCES datasets (name) ON DELETE CASCADE,
    sample_id           TEXT    NOT NULL,
    version             INTEGER NOT NULL CHECK (version >= 1),
    latest              INTEGER NOT NULL CHECK (latest IN (0, 1)),
    created_at          TEXT    NOT NULL,
    instance_id         TEXT    NOT NULL,
    repo                TEXT    NOT NULL,
    base_commit         TEXT    NOT NULL,
    version_description TEXT,
    -- The whole SampleRecord as JSON, verbatim.
    record              TEXT    NOT NULL,
    PRIMARY KEY (dataset, sample_id, version)
);
-- At most one latest version per sample; also the index that lists latest samples in
-- (dataset, sample_id) order.
CREATE UNIQUE INDEX samples_latest ON samples (dataset, sample_id) WHERE latest = 1;
