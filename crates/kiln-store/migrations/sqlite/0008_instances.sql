-- Instances (SQLite): a session made from a base image rather than a dataset sample, with a
-- name, labels and the resources it was given. See ../README.md and postgres/0008.
--
-- SQLite cannot drop NOT NULL, so `sessions` is rebuilt as its documentation says
-- (https://www.sqlite.org/lang_altertable.html#otheralter): create the new table, copy, drop
-- the old one, rename, recreate the indexes. sqlx runs this file in a transaction with
-- foreign keys on, where `PRAGMA foreign_keys` cannot change, and neither
-- `defer_foreign_keys` nor `legacy_alter_table` helps: DROP TABLE deletes the rows first, so
-- dropping a table other rows still reference fails at COMMIT, and RENAME rewrites the
-- references in other tables. So the two tables that reference `sessions` (interactions,
-- verification_jobs) are rebuilt with it, pointing at the new table from the start: the
-- old tables are dropped children first, and when `sessions_new` is renamed SQLite
-- rewrites their references to `sessions`. Every row keeps its values.

CREATE TABLE sessions_new (
    session_id              TEXT    NOT NULL PRIMARY KEY,
    user_id                 TEXT    NOT NULL REFERENCES users (user_id),
    dataset                 TEXT,
    sample_id               TEXT,
    sample_version          INTEGER,
    status                  TEXT    NOT NULL
        CHECK (status IN ('creating', 'ready', 'error', 'closed', 'terminated')),
    requested_at            TEXT    NOT NULL,
    ready_at                TEXT,
    expires_at              TEXT    NOT NULL,
    ended_at                TEXT,
    sandbox_id              TEXT,
    location                TEXT,
    error_code              TEXT,
    error_message           TEXT,
    last_interaction_seq    INTEGER NOT NULL DEFAULT 0,
    alive_at                TEXT,
    usage_cpu_micros        INTEGER,
    usage_memory_peak_bytes INTEGER,
    usage_disk_used_bytes   INTEGER,
    usage_disk_limit_bytes  INTEGER,
    usage_pids_peak         INTEGER,
    usage_at                TEXT,
    image                   TEXT,
    name                    TEXT,
    -- A JSON object of string keys to string values.
    labels                  TEXT    NOT NULL DEFAULT '{}',
    -- The limits its sandbox was given; NULL for sessions made before they were recorded.
    limit_cpu_millicores    INTEGER,
    limit_memory_bytes      INTEGER,
    limit_disk_bytes        INTEGER,
    -- Exactly one source: a sample (still checked by the foreign key, which ignores rows
    -- with NULLs) or an image reference.
    CHECK ((image IS NULL AND dataset IS NOT NULL AND sample_id IS NOT NULL
            AND sample_version IS NOT NULL)
        OR (image IS NOT NULL AND dataset IS NULL AND sample_id IS NULL
            AND sample_version IS NULL)),
    FOREIGN KEY (dataset, sample_id, sample_version) REFERENCES samples (dataset, sample_id, version)
);

INSERT INTO sessions_new (session_id, user_id, dataset, sample_id, sample_version, status,
    requested_at, ready_at, expires_at, ended_at, sandbox_id, location, error_code,
    error_message, last_interaction_seq, alive_at, usage_cpu_micros, usage_memory_peak_bytes,
    usage_disk_used_bytes, usage_disk_limit_bytes, usage_pids_peak, usage_at)
SELECT session_id, user_id, dataset, sample_id, sample_version, status,
    requested_at, ready_at, expires_at, ended_at, sandbox_id, location, error_code,
    error_message, last_interaction_seq, alive_at, usage_cpu_micros, usage_memory_peak_bytes,
    usage_disk_used_bytes, usage_disk_limit_bytes, usage_pids_peak, usage_at
FROM sessions;

CREATE TABLE interactions_new (
    interaction_id         TEXT    NOT NULL PRIMARY KEY,
    session_id             TEXT    NOT NULL REFERENCES sessions_new (session_id),
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
    output_expired_at      TEXT,
    CHECK (finished_at IS NULL OR (exit_code IS NOT NULL AND stdout IS NOT NULL
        AND stderr IS NOT NULL AND execution_time_seconds IS NOT NULL AND success IS NOT NULL)),
    UNIQUE (session_id, seq)
);
INSERT INTO interactions_new (interaction_id, session_id, seq, kind, created_at, request,
    exit_code, stdout, stderr, execution_time_seconds, success, message, finished_at,
    output_expired_at)
SELECT interaction_id, session_id, seq, kind, created_at, request,
    exit_code, stdout, stderr, execution_time_seconds, success, message, finished_at,
    output_expired_at
FROM interactions;

CREATE TABLE verification_jobs_new (
    job_id        TEXT NOT NULL PRIMARY KEY,
    session_id    TEXT NOT NULL REFERENCES sessions_new (session_id),
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
INSERT INTO verification_jobs_new (job_id, session_id, user_id, sample_id, status, created_at,
    started_at, completed_at, result, error_code, error_message)
SELECT job_id, session_id, user_id, sample_id, status, created_at,
    started_at, completed_at, result, error_code, error_message
FROM verification_jobs;

-- Children first: nothing references them, and then nothing references the old sessions.
DROP TABLE interactions;
DROP TABLE verification_jobs;
DROP TABLE sessions;
ALTER TABLE sessions_new RENAME TO sessions;
ALTER TABLE interactions_new RENAME TO interactions;
ALTER TABLE verification_jobs_new RENAME TO verification_jobs;

CREATE INDEX sessions_by_user ON sessions (user_id, requested_at DESC, session_id DESC);
CREATE INDEX sessions_by_status ON sessions (status);
CREATE INDEX interactions_unfinished ON interactions (created_at) WHERE finished_at IS NULL;
CREATE INDEX interactions_output_kept ON interactions (finished_at)
    WHERE output_expired_at IS NULL AND finished_at IS NOT NULL;
CREATE INDEX verification_jobs_by_session ON verification_jobs (session_id);
CREATE INDEX verification_jobs_unfinished ON verification_jobs (created_at)
    WHERE status IN ('pending', 'starting', 'running');
