-- Commands run through the instance API (/v1/instances/{id}/exec), sqlite. Kept apart from
-- the Codeset interactions, whose contract (seq, kinds, success) they do not fit. See ../README.md.
-- stdout/stderr: the kept output (head and tail within sessions.max_output_bytes, marked
-- where cut), empty while running; TEXT as in interactions.

CREATE TABLE instance_execs (
    exec_id      TEXT NOT NULL PRIMARY KEY,
    session_id   TEXT NOT NULL REFERENCES sessions (session_id),
    user_id      TEXT NOT NULL REFERENCES users (user_id),
    -- JSON: {"command": "…"} (run with sh -c) or {"argv": […]}.
    command      TEXT NOT NULL,
    cwd          TEXT,
    mode         TEXT NOT NULL CHECK (mode IN ('sync', 'background', 'stream')),
    status       TEXT NOT NULL CHECK (status IN ('running', 'exited', 'timed_out', 'failed')),
    exit_code    INTEGER,
    signal       INTEGER,
    stdout       TEXT NOT NULL,
    stderr       TEXT NOT NULL,
    truncated    INTEGER NOT NULL CHECK (truncated IN (0, 1)),
    duration_ms  INTEGER,
    error        TEXT,
    created_at   TEXT NOT NULL,
    finished_at  TEXT,
    CHECK ((status = 'running') = (finished_at IS NULL))
);
-- An instance's history, newest first: the cursor is (created_at, exec_id).
CREATE INDEX instance_execs_by_session ON instance_execs (session_id, created_at DESC, exec_id DESC);
CREATE INDEX instance_execs_running ON instance_execs (created_at) WHERE status = 'running';
