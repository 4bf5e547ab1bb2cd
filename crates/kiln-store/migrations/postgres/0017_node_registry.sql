-- The node registry (issue 12): every `kiln serve` on this database, what it offers and
-- when it last said it was alive. A node that misses its heartbeats is set `down` by one
-- conditional UPDATE of another node, which then ends its sessions `node_lost`.
CREATE TABLE nodes (
    node_id           TEXT        NOT NULL PRIMARY KEY,
    address           TEXT        NOT NULL,
    backend           TEXT        NOT NULL,
    version           TEXT        NOT NULL,
    status            TEXT        NOT NULL CHECK (status IN ('active', 'draining', 'down')),
    max_sessions      BIGINT      NOT NULL,
    memory_mib        BIGINT      NOT NULL,
    disk_mib          BIGINT      NOT NULL,
    live_sessions     BIGINT      NOT NULL DEFAULT 0,
    registered_at     TIMESTAMPTZ NOT NULL,
    last_heartbeat_at TIMESTAMPTZ NOT NULL,
    down_at           TIMESTAMPTZ
);
CREATE INDEX nodes_heartbeat ON nodes (last_heartbeat_at) WHERE status <> 'down';
