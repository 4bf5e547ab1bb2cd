-- Port forwards into instances (SQLite): open while closed_at is NULL. Kept after they
-- close (with the reason) so a restart can tell which to re-open.
CREATE TABLE port_forwards (
    forward_id   TEXT    NOT NULL PRIMARY KEY,
    session_id   TEXT    NOT NULL REFERENCES sessions (session_id),
    user_id      TEXT    NOT NULL REFERENCES users (user_id),
    port         INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    mode         TEXT    NOT NULL CHECK (mode IN ('host_port', 'path')),
    host_address TEXT,
    created_at   TEXT    NOT NULL,
    closed_at    TEXT,
    close_reason TEXT
);
CREATE INDEX port_forwards_by_session ON port_forwards (session_id, created_at);
CREATE INDEX port_forwards_by_user ON port_forwards (user_id, closed_at);
