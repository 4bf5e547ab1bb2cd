-- Sessions, their interactions, and verification jobs (PostgreSQL). See ../README.md.
-- Same conventions as 0001: TIMESTAMPTZ, ids and names that listings sort by COLLATE "C".
-- JSON is TEXT, not JSONB: JSONB refuses the \u0000 escape, which a command or a test
-- result can contain. stdout and stderr are BYTEA (UTF-8 bytes) because TEXT cannot hold
-- NUL characters, which command output can.

CREATE TABLE sessions (
    session_id           TEXT        COLLATE "C" NOT NULL PRIMARY KEY,
    user_id              TEXT        NOT NULL REFERENCES users (user_id),
    dataset              TEXT        COLLATE "C" NOT NULL,
    sample_id            TEXT        COLLATE "C" NOT NULL,
    sample_version       BIGINT      NOT NULL,
    status               TEXT        NOT NULL
        CHECK (status IN ('creating', 'ready', 'error', 'closed', 'terminated')),
    requested_at         TIMESTAMPTZ NOT NULL,
    ready_at             TIMESTAMPTZ,
    expires_at           TIMESTAMPTZ NOT NULL,
    ended_at             TIMESTAMPTZ,
    sandbox_id           TEXT,
    location             TEXT,
    error_code           TEXT,
    error_message        TEXT,
    -- The seq of the session's latest interaction: incremented (under the row lock) to hand
    -- out the next one, so that concurrent inserts into one session get 1, 2, 3… without
    -- gaps or duplicates.
    last_interaction_seq BIGINT      NOT NULL DEFAULT 0,
    -- A session runs one exact, existing version of a sample. No cascades: sessions are
    -- what usage is billed from.
    FOREIGN KEY (dataset, sample_id, sample_version) REFERENCES samples (dataset, sample_id, version)
);
-- A user's sessions, newest first.
CREATE INDEX sessions_by_user ON sessions (user_id, requested_at DESC, session_id DESC);
-- Reconciliation at start-up and the TTL reaper look sessions up by status.
CREATE INDEX sessions_by_status ON sessions (status);

CREATE TABLE interactions (
    interaction_id         TEXT        NOT NULL PRIMARY KEY,
    session_id             TEXT        COLLATE "C" NOT NULL REFERENCES sessions (session_id),
    seq                    BIGINT      NOT NULL CHECK (seq >= 1),
    kind                   TEXT        NOT NULL
        CHECK (kind IN ('exec_command', 'string_replace', 'file_upload')),
    created_at             TIMESTAMPTZ NOT NULL,
    request                TEXT        NOT NULL,
    -- The outcome: all NULL until the interaction finishes, then all set (message optional).
    exit_code              BIGINT,
    stdout                 BYTEA,
    stderr                 BYTEA,
    execution_time_seconds DOUBLE PRECISION,
    success                BOOLEAN,
    message                TEXT,
    finished_at            TIMESTAMPTZ,
    CHECK (finished_at IS NULL OR (exit_code IS NOT NULL AND stdout IS NOT NULL
        AND stderr IS NOT NULL AND execution_time_seconds IS NOT NULL AND success IS NOT NULL)),
    UNIQUE (session_id, seq)
);
-- Restart recovery finds the unfinished ones, oldest first.
CREATE INDEX interactions_unfinished ON interactions (created_at) WHERE finished_at IS NULL;

CREATE TABLE verification_jobs (
    job_id        TEXT        NOT NULL PRIMARY KEY,
    session_id    TEXT        COLLATE "C" NOT NULL REFERENCES sessions (session_id),
    user_id       TEXT        NOT NULL REFERENCES users (user_id),
    sample_id     TEXT        NOT NULL,
    status        TEXT        NOT NULL
        CHECK (status IN ('pending', 'starting', 'running', 'completed', 'error', 'cancelled')),
    created_at    TIMESTAMPTZ NOT NULL,
    started_at    TIMESTAMPTZ,
    completed_at  TIMESTAMPTZ,
    result        TEXT,
    error_code    TEXT,
    error_message TEXT
);
CREATE INDEX verification_jobs_by_session ON verification_jobs (session_id);
CREATE INDEX verification_jobs_unfinished ON verification_jobs (created_at)
    WHERE status IN ('pending', 'starting', 'running');
