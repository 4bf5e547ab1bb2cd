-- Organizations, memberships, invitations, org API keys and the audit log (SQLite). See
-- ../README.md. Same conventions as 0001: fixed-width UTC TEXT timestamps, booleans 0/1.
--
-- Every user gets a personal organization (their default). Existing users get theirs here,
-- with deterministic ids (`org_p_<user_id>`) and themselves as its account user, so their
-- keys, sessions and ledger (which point at the user) are untouched and now the org's.

CREATE TABLE organizations (
    org_id      TEXT NOT NULL PRIMARY KEY,
    -- [a-z0-9-], unique: the name a client puts in X-Org-Slug and paths.
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    -- The user whose personal organization this is (one each), NULL for a team org.
    personal_of TEXT UNIQUE REFERENCES users (user_id),
    -- The user row that owns what the organization owns (sessions, instances, agent jobs,
    -- the ledger): the user themself for a personal org, a user row of its own (no
    -- credentials, never signs in) for a team org. Members act through it.
    account_user_id TEXT NOT NULL UNIQUE REFERENCES users (user_id),
    created_by  TEXT REFERENCES users (user_id),
    created_at  TEXT NOT NULL
);

CREATE TABLE org_members (
    org_id     TEXT    NOT NULL REFERENCES organizations (org_id),
    user_id    TEXT    NOT NULL REFERENCES users (user_id),
    role       TEXT    NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    -- The membership a request without an org key or X-Org-Slug acts in (one per user).
    is_default INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    created_at TEXT    NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_members_by_user ON org_members (user_id, created_at);
CREATE UNIQUE INDEX org_members_one_default ON org_members (user_id) WHERE is_default = 1;

-- Emailed invitations: only the SHA-256 of the token is kept; accepting spends it with one
-- conditional UPDATE (unused, unrevoked, unexpired).
CREATE TABLE org_invitations (
    invitation_id TEXT NOT NULL PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations (org_id),
    email         TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    token_hash    TEXT NOT NULL UNIQUE,
    invited_by    TEXT NOT NULL REFERENCES users (user_id),
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    accepted_at   TEXT,
    accepted_by   TEXT REFERENCES users (user_id),
    revoked_at    TEXT
);
CREATE INDEX org_invitations_by_org ON org_invitations (org_id, created_at);
CREATE INDEX org_invitations_by_email ON org_invitations (email);

-- An API key created under /v1/orgs/{slug}/api-keys carries its org: every request made
-- with it acts in that org. (The key itself is an ordinary api_keys row of its creator.)
CREATE TABLE org_api_keys (
    key_id TEXT NOT NULL PRIMARY KEY REFERENCES api_keys (key_id),
    org_id TEXT NOT NULL REFERENCES organizations (org_id)
);
CREATE INDEX org_api_keys_by_org ON org_api_keys (org_id);

-- Security-relevant actions, append-only (the triggers refuse UPDATE and DELETE).
CREATE TABLE audit_log (
    event_id    TEXT NOT NULL PRIMARY KEY,
    org_id      TEXT,
    actor_id    TEXT,
    action      TEXT NOT NULL,
    target      TEXT,
    ip_address  TEXT NOT NULL DEFAULT '',
    -- JSON object with what else is worth keeping (role, key name, …).
    details     TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL
);
CREATE INDEX audit_log_by_org ON audit_log (org_id, created_at DESC, event_id DESC);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

-- Every existing user gets a personal organization, owned by them and their default.
INSERT INTO organizations (org_id, slug, name, personal_of, account_user_id, created_by,
                           created_at)
    SELECT 'org_p_' || user_id, 'p-' || replace(lower(user_id), '_', '-'), name, user_id, user_id,
           user_id, created_at
    FROM users;
INSERT INTO org_members (org_id, user_id, role, is_default, created_at)
    SELECT 'org_p_' || user_id, user_id, 'owner', 1, created_at FROM users;
