-- Sessions, their interactions, and verification jobs (SQLite). See ../README.md.
-- Same conventions as 0001: fixed-width UTC TEXT timestamps, INTEGER 0/1 booleans.

CREATE TABLE sessions (
    session_id           TEXT    NOT NULL PRIMARY KEY,
    user_id              TEXT    NOT NULL REFERENCES users (user_id),
    dataset              TEXT    NOT NULL,
    sample_id            TEXT    NOT NULL,
    sample_version       INTEGER NOT NULL,
    status               TEXT    NOT NULL
        CHECK (status IN ('creating', 'ready', 'error', 'closed', 'terminated')),
    requested_at         TEXT    NOT NULL,
    ready_at             TEXT,
    expires_at           TEXT    NOT NULL,
    ended_at             TEXT,
    sandbox_id           TEXT,
    location             TEXT,
    error_code           TEXT,
    error_message        TEXT,
    -- The seq of the session's latest interaction: incremented to hand out the next one, so
    -- that concurrent inserts into one session get 1, 2, 3… without gaps or duplicates.
    last_interaction_seq INTEGER NOT NULL DEFAULT 0,
    -- A session runs one exact, existing version of a sample. No cascades: sessions are
    -- what usage is billed from.
    FOREIGN KEY (dataset, sample_id, sample_version) REFERENCES samples (dataset, sample_id, version)
);
-- A user's sessions, newest first.
CREATE INDEX sessions_by_user ON sessions (user_id, requested_at DESC, session_id DESC);
-- Reconciliation at start-up and the TTL reaper look sessions up by status.
CREATE INDEX sessions_by_status ON sessions (status);

CREATE TABLE interactions (
    interaction_id         TEXT    NOT NULL PRIMARY KEY,
    session_id             TEXT    NOT NULL REFERENCES sessions (session_id),
    seq                    INTEGER NOT NULL CHECK (seq >= 1),
    kind                   TEXT    NOT NULL
        CHECK (kind IN ('exec_command', 'string_replace', 'file_upload')),
    created_at             TEXT    NOT NULL,
    -- The request as JSON text.
    request                TEXT    NOT NULL,
    -- The outcome: all NULL until the interaction finishes, then all set (message optional).
    exit_code              INTEGER,
    stdout                 TEXT,
    stderr                 TEXT,
    execution_time_seconds REAL,
    success                INTEGER CHECK (success IN (0, 1)),
    message                TEXT,
    finished_at            TEXT,
    CHECK (finished_at IS NULL OR (exit_code IS NOT NULL AND stdout IS NOT NULL
        AND stderr IS NOT NULL AND execution_time_seconds IS NOT NULL AND success IS NOT NULL)),
    UNIQUE (session_id, seq)
);
-- Restart recovery finds the unfinished ones, oldest first.
CREATE INDEX interactions_unfinished ON interactions (created_at) WHERE finished_at IS NULL;

CREATE TABLE verification_jobs (
    job_id        TEXT NOT NULL PRIMARY KEY,
    session_id    TEXT NOT NULL REFERENCES sessions (session_id),
    user_id       TEXT NOT NULL REFERENCES users (user_id),
    sample_id     TEXT NOT NULL,
    status        TEXT NOT NULL
        CHECK (status IN ('pending', 'starting', 'running', 'completed', 'error', 'cancelled')),
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    completed_at  TEXT,
    -- JSON text, once completed.
    result        TEXT,
    error_code    TEXT,
    error_message TEXT
);
CREATE INDEX verification_jobs_by_session ON verification_jobs (session_id);
CREATE INDEX verification_jobs_unfinished ON verification_jobs (created_at)
    WHERE status IN ('pending', 'starting', 'running');
