-- The append-only event log. Appends run under BEGIN IMMEDIATE (one writer at a time),
-- so positions are gap-free and in commit order.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY CHECK (position > 0),
    stream          TEXT    NOT NULL,
    version         INTEGER NOT NULL CHECK (version > 0),
    id              TEXT    NOT NULL UNIQUE,
    event_type      TEXT    NOT NULL,
    schema_version  INTEGER NOT NULL CHECK (schema_version > 0),
    payload         TEXT    NOT NULL,
    metadata        TEXT    NOT NULL,
    recorded_at     TEXT    NOT NULL,
    prev_hash       TEXT    NOT NULL,
    hash            TEXT    NOT NULL,
    UNIQUE (stream, version)
);

CREATE TABLE event_head (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    position  INTEGER NOT NULL,
    hash      TEXT    NOT NULL
);
INSERT INTO event_head (id, position, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Immutability: stored events are never updated or deleted. (SQLite has no TRUNCATE;
-- a DELETE without WHERE fires this trigger too.)
CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'rollgate events are immutable: UPDATE on events refused');
END;

CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'rollgate events are immutable: DELETE on events refused');
END;
