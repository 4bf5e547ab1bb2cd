-- Snapshots and checkpoints of instances (/v1), and which snapshot an instance's sandbox
-- stands on. See ../README.md. A deleted snapshot keeps its row: it stays in the runtime
-- (purged_at NULL) while a live instance or another snapshot still stands on it.

CREATE TABLE snapshots (
    snapshot_id        TEXT NOT NULL PRIMARY KEY,
    user_id            TEXT NOT NULL REFERENCES users (user_id),
    -- The instance (session) it was taken of.
    instance_id        TEXT NOT NULL REFERENCES sessions (session_id),
    -- The snapshot that instance stood on when this was taken (its layers lie below).
    parent_snapshot_id TEXT REFERENCES snapshots (snapshot_id),
    name               TEXT NOT NULL,
    kind               TEXT NOT NULL CHECK (kind IN ('snapshot', 'checkpoint')),
    size_bytes         INTEGER NOT NULL,
    -- What the runtime calls it.
    runtime_ref        TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    deleted_at         TEXT,
    -- Removed from the runtime (only ever after deleted_at).
    purged_at          TEXT
);
-- Names are unique among an instance's snapshots that are not deleted.
CREATE UNIQUE INDEX snapshots_live_name ON snapshots (instance_id, name)
    WHERE deleted_at IS NULL;
CREATE INDEX snapshots_by_instance ON snapshots (instance_id, created_at DESC);
CREATE INDEX snapshots_by_user ON snapshots (user_id) WHERE deleted_at IS NULL;
CREATE INDEX snapshots_by_parent ON snapshots (parent_snapshot_id)
    WHERE parent_snapshot_id IS NOT NULL;
CREATE INDEX snapshots_to_purge ON snapshots (deleted_at)
    WHERE deleted_at IS NOT NULL AND purged_at IS NULL;

-- The snapshot an instance made by a fork or a restore stands on (one row per instance,
-- replaced by a later restore into it).
CREATE TABLE instance_sources (
    instance_id TEXT NOT NULL PRIMARY KEY REFERENCES sessions (session_id),
    snapshot_id TEXT NOT NULL REFERENCES snapshots (snapshot_id),
    recorded_at TEXT NOT NULL
);
CREATE INDEX instance_sources_by_snapshot ON instance_sources (snapshot_id);
