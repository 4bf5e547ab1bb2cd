-- Organizations, memberships, invitations, org API keys and the audit log (PostgreSQL).
-- See ../README.md and sqlite/0016_orgs.sql (same tables, TIMESTAMPTZ and BOOLEAN).
--
-- Every user gets a personal organization (their default). Existing users get theirs here,
-- with deterministic ids (`org_p_<user_id>`) and themselves as its account user, so their
-- keys, sessions and ledger (which point at the user) are untouched and now the org's.

CREATE TABLE organizations (
    org_id      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    personal_of TEXT UNIQUE REFERENCES users (user_id),
    -- The user row that owns what the organization owns (sessions, instances, agent jobs,
    -- the ledger): the user themself for a personal org, a user row of its own (no
    -- credentials, never signs in) for a team org. Members act through it.
    account_user_id TEXT NOT NULL UNIQUE REFERENCES users (user_id),
    created_by  TEXT REFERENCES users (user_id),
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE org_members (
    org_id     TEXT        NOT NULL REFERENCES organizations (org_id),
    user_id    TEXT        NOT NULL REFERENCES users (user_id),
    role       TEXT        NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    is_default BOOLEAN     NOT NULL DEFAULT FALSE,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX org_members_by_user ON org_members (user_id, created_at);
CREATE UNIQUE INDEX org_members_one_default ON org_members (user_id) WHERE is_default;

CREATE TABLE org_invitations (
    invitation_id TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations (org_id),
    email         TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    token_hash    TEXT NOT NULL UNIQUE,
    invited_by    TEXT NOT NULL REFERENCES users (user_id),
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    accepted_at   TIMESTAMPTZ,
    accepted_by   TEXT REFERENCES users (user_id),
    revoked_at    TIMESTAMPTZ
);
CREATE INDEX org_invitations_by_org ON org_invitations (org_id, created_at);
CREATE INDEX org_invitations_by_email ON org_invitations (email);

CREATE TABLE org_api_keys (
    key_id TEXT NOT NULL PRIMARY KEY REFERENCES api_keys (key_id),
    org_id TEXT NOT NULL REFERENCES organizations (org_id)
);
CREATE INDEX org_api_keys_by_org ON org_api_keys (org_id);

CREATE TABLE audit_log (
    event_id    TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    org_id      TEXT,
    actor_id    TEXT,
    action      TEXT NOT NULL,
    target      TEXT,
    ip_address  TEXT NOT NULL DEFAULT '',
    details     TEXT NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX audit_log_by_org ON audit_log (org_id, created_at DESC, event_id DESC);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

INSERT INTO organizations (org_id, slug, name, personal_of, account_user_id, created_by,
                           created_at)
    SELECT 'org_p_' || user_id, 'p-' || replace(lower(user_id), '_', '-'), name, user_id, user_id,
           user_id, created_at
    FROM users;
INSERT INTO org_members (org_id, user_id, role, is_default, created_at)
    SELECT 'org_p_' || user_id, user_id, 'owner', TRUE, created_at FROM users;
