-- Agent jobs (SQLite): an agent run over a repository in a sandbox. See ../README.md.
-- Same conventions as 0001: fixed-width UTC TEXT timestamps.

CREATE TABLE agent_jobs (
    job_id        TEXT NOT NULL PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (user_id),
    repo          TEXT NOT NULL,
    -- The ref asked for (branch, tag or commit); NULL means the repository's HEAD.
    git_ref       TEXT,
    agent_id      TEXT NOT NULL,
    status        TEXT NOT NULL
        CHECK (status IN ('pending', 'starting', 'running', 'completed', 'error', 'cancelled')),
    progress      TEXT,
    -- SHA-256 (hex) of the completion secret; the secret itself is never stored.
    secret_hash   TEXT NOT NULL,
    error_message TEXT,
    -- The result archive on the server's disk, once there is one.
    result_path   TEXT,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    completed_at  TEXT
);
-- A user's jobs, newest first: the cursor is (created_at, job_id).
CREATE INDEX agent_jobs_by_user ON agent_jobs (user_id, created_at DESC, job_id DESC);
CREATE INDEX agent_jobs_unfinished ON agent_jobs (created_at)
    WHERE status IN ('pending', 'starting', 'running');
