-- Org security (issue 15, SQLite): sudo grants, org IP allowlists. See ../README.md.
--
-- Sudo: `POST /v1/auth/sudo` re-verifies the password (and a second factor) and lets the
-- credential that asked — one device session, or one API key — call destructive routes
-- until `sudo_until`. NULL: no grant.
ALTER TABLE device_sessions ADD COLUMN sudo_until TEXT;
ALTER TABLE api_keys ADD COLUMN sudo_until TEXT;

-- The addresses an organization's API keys may be used from (none: anywhere).
CREATE TABLE org_ip_allowlist (
    entry_id   TEXT NOT NULL PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES organizations (org_id),
    -- Canonical CIDR (`10.0.0.0/8`, `2001:db8::/32`): host bits cleared, so equal
    -- networks are equal strings.
    cidr       TEXT NOT NULL,
    note       TEXT NOT NULL DEFAULT '',
    created_by TEXT REFERENCES users (user_id),
    created_at TEXT NOT NULL,
    UNIQUE (org_id, cidr)
);
