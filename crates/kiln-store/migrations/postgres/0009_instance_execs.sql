-- Commands run through the instance API (/v1/instances/{id}/exec), postgres. Kept apart from
-- the Codeset interactions, whose contract (seq, kinds, success) they do not fit. See ../README.md.
-- stdout/stderr: the kept output (head and tail within sessions.max_output_bytes, marked
-- where cut), empty while running; BYTEA as in interactions.

CREATE TABLE instance_execs (
    exec_id      TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    session_id   TEXT COLLATE "C" NOT NULL REFERENCES sessions (session_id),
    user_id      TEXT NOT NULL REFERENCES users (user_id),
    -- JSON: {"command": "…"} (run with sh -c) or {"argv": […]}.
    command      TEXT NOT NULL,
    cwd          TEXT,
    mode         TEXT NOT NULL CHECK (mode IN ('sync', 'background', 'stream')),
    status       TEXT NOT NULL CHECK (status IN ('running', 'exited', 'timed_out', 'failed')),
    exit_code    BIGINT,
    signal       BIGINT,
    stdout       BYTEA NOT NULL,
    stderr       BYTEA NOT NULL,
    truncated    BOOLEAN NOT NULL,
    duration_ms  BIGINT,
    error        TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    CHECK ((status = 'running') = (finished_at IS NULL))
);
-- An instance's history, newest first: the cursor is (created_at, exec_id).
CREATE INDEX instance_execs_by_session ON instance_execs (session_id, created_at DESC, exec_id DESC);
CREATE INDEX instance_execs_running ON instance_execs (created_at) WHERE status = 'running';
