-- Webhooks and their deliveries (SQLite). See ../README.md.
-- Same conventions as 0001: fixed-width UTC TEXT timestamps, booleans as INTEGER 0/1.

CREATE TABLE webhooks (
    webhook_id    TEXT    NOT NULL PRIMARY KEY,
    user_id       TEXT    NOT NULL REFERENCES users (user_id),
    url           TEXT    NOT NULL,
    description   TEXT    NOT NULL DEFAULT '',
    -- JSON array of event types; ["*"] for every type.
    events        TEXT    NOT NULL,
    active        INTEGER NOT NULL DEFAULT 1,
    -- The signing secret, sealed by the server (kiln-services' secret_box); never in clear.
    secret_sealed TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    updated_at    TEXT    NOT NULL
);
CREATE INDEX webhooks_by_user ON webhooks (user_id, created_at);

-- The outbox: one row per (event, webhook), written before anything is sent, in the same
-- transaction for every webhook an event goes to. A sender claims due rows with a lease
-- (lease_until); a crash mid-send leaves the lease to run out, and the row is sent again.
CREATE TABLE webhook_deliveries (
    delivery_id      TEXT    NOT NULL PRIMARY KEY,
    webhook_id       TEXT    NOT NULL REFERENCES webhooks (webhook_id) ON DELETE CASCADE,
    user_id          TEXT    NOT NULL,
    event_id         TEXT    NOT NULL,
    event_type       TEXT    NOT NULL,
    -- The exact body sent, and resent on every attempt.
    body             TEXT    NOT NULL,
    status           TEXT    NOT NULL CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT    NOT NULL,
    lease_until      TEXT,
    last_attempt_at  TEXT,
    last_status_code INTEGER,
    last_error       TEXT,
    last_response    TEXT,
    created_at       TEXT    NOT NULL,
    delivered_at     TEXT,
    UNIQUE (event_id, webhook_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (webhook_id, created_at DESC, delivery_id DESC);
-- Retention deletes finished deliveries by age.
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (created_at)
    WHERE status <> 'pending';
