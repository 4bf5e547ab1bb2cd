-- Kiln's first schema (PostgreSQL). Released migrations are never edited: see ../README.md.
--
-- Timestamps are TIMESTAMPTZ: microsecond precision, stored as UTC instants.
-- Names that listings sort by are COLLATE "C": byte order, the same as SQLite's BINARY, so
-- both backends list in the same order whatever the database's locale.

CREATE TABLE users (
    user_id           TEXT        NOT NULL PRIMARY KEY,
    name              TEXT        NOT NULL,
    email             TEXT        NOT NULL,
    github_id         TEXT        UNIQUE,
    github_login      TEXT,
    is_admin          BOOLEAN     NOT NULL DEFAULT FALSE,
    is_active         BOOLEAN     NOT NULL DEFAULT TRUE,
    created_at        TIMESTAMPTZ NOT NULL,
    last_login_at     TIMESTAMPTZ,
    terms_accepted_at TIMESTAMPTZ
);

CREATE TABLE api_keys (
    key_id       TEXT        NOT NULL PRIMARY KEY,
    user_id      TEXT        NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    name         TEXT,
    key_hash     TEXT        NOT NULL UNIQUE,
    masked       TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ,
    revoked_at   TIMESTAMPTZ,
    last_used_at TIMESTAMPTZ
);
CREATE INDEX api_keys_by_user ON api_keys (user_id, created_at);

CREATE TABLE refresh_tokens (
    token_id   TEXT        NOT NULL PRIMARY KEY,
    family_id  TEXT        NOT NULL,
    user_id    TEXT        NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    issued_at  TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    used_at    TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
-- Revoking a family and checking whether a family is revoked both go by family.
CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id);

CREATE TABLE datasets (
    name        TEXT        COLLATE "C" NOT NULL PRIMARY KEY,
    description TEXT,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE samples (
    dataset             TEXT        COLLATE "C" NOT NULL REFERENCES datasets (name) ON DELETE CASCADE,
    sample_id           TEXT        COLLATE "C" NOT NULL,
    version             BIGINT      NOT NULL CHECK (version >= 1),
    latest              BOOLEAN     NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL,
    -- "C" also makes ILIKE fold ASCII letters only, as SQLite's LIKE does.
    instance_id         TEXT        COLLATE "C" NOT NULL,
    repo                TEXT        NOT NULL,
    base_commit         TEXT        NOT NULL,
    version_description TEXT,
    -- The whole SampleRecord as JSON, verbatim (TEXT, not JSONB, which would reorder keys).
    record              TEXT        NOT NULL,
    PRIMARY KEY (dataset, sample_id, version)
);
-- At most one latest version per sample; also the index that lists latest samples in
-- (dataset, sample_id) order.
CREATE UNIQUE INDEX samples_latest ON samples (dataset, sample_id) WHERE latest;
