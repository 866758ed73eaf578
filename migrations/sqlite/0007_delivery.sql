-- Outbound delivery (webhooks; later GitHub callbacks and Slack messages): the event log is
-- the outbox. Each target follows the global log from its own durable checkpoint; one
-- instance at a time delivers a target (a lease with an owner and an expiry, taken over when
-- it expires); every attempt is recorded.

CREATE TABLE delivery_checkpoints (
    target TEXT PRIMARY KEY,
    -- Every event at or before this position has been delivered (or does not concern the target).
    position BIGINT NOT NULL CHECK (position >= 0),
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE delivery_leases (
    target TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

CREATE TABLE delivery_attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    position BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    -- The HTTP status, when the receiver answered.
    status INTEGER,
    error TEXT,
    owner TEXT NOT NULL,
    attempted_at_ms BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL
);

CREATE INDEX delivery_attempts_by_target ON delivery_attempts (target, id);

-- How far the registry of targets (webhook streams) has been read, shared by all instances so
-- that a redelivery request rewinds a checkpoint exactly once.
CREATE TABLE delivery_registry (
    name TEXT PRIMARY KEY,
    position BIGINT NOT NULL CHECK (position >= 0)
);
