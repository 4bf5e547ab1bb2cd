-- Billing (SQLite): the ledger, processed Stripe events, and session heartbeats.
-- See ../README.md. Amounts are integer cents: positive credits the user, negative charges.

CREATE TABLE billing_transactions (
    transaction_id   TEXT    NOT NULL PRIMARY KEY,
    user_id          TEXT    NOT NULL REFERENCES users (user_id),
    kind             TEXT    NOT NULL
        CHECK (kind IN ('deposit', 'session_usage', 'refund', 'agent_job_usage', 'agent_job_refund')),
    amount_cents     INTEGER NOT NULL,
    description      TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    session_id       TEXT,
    job_id           TEXT,
    duration_minutes REAL,
    -- What the transaction is for (a session id, a job id, a Stripe checkout session id):
    -- one transaction of a kind per reference, so a charge, refund or credit is applied at
    -- most once however often it is retried. NULLs are distinct: free-form grants repeat.
    reference        TEXT,
    UNIQUE (kind, reference)
);
-- A user's ledger, newest first.
CREATE INDEX billing_transactions_by_user
    ON billing_transactions (user_id, created_at DESC, transaction_id DESC);

-- Stripe events already handled: a redelivery of one is a no-op.
CREATE TABLE stripe_events (
    event_id    TEXT NOT NULL PRIMARY KEY,
    received_at TEXT NOT NULL
);

-- The last time the session's sandbox was seen alive: a session whose sandbox vanished while
-- the server was down is billed up to here, not through the downtime.
ALTER TABLE sessions ADD COLUMN alive_at TEXT;
