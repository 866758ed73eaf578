-- The append-only event log. Positions are assigned under the lock on event_head,
-- so they are gap-free and in commit order.
CREATE TABLE events (
    position        BIGINT      PRIMARY KEY CHECK (position > 0),
    stream          TEXT        NOT NULL,
    version         BIGINT      NOT NULL CHECK (version > 0),
    id              UUID        NOT NULL UNIQUE,
    event_type      TEXT        NOT NULL,
    schema_version  INTEGER     NOT NULL CHECK (schema_version > 0),
    payload         JSONB       NOT NULL,
    metadata        JSONB       NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    prev_hash       TEXT        NOT NULL,
    hash            TEXT        NOT NULL,
    UNIQUE (stream, version)
);

-- One row: the last assigned position and the hash at that position.
CREATE TABLE event_head (
    id        SMALLINT PRIMARY KEY CHECK (id = 1),
    position  BIGINT   NOT NULL,
    hash      TEXT     NOT NULL
);
INSERT INTO event_head (id, position, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Immutability: stored events are never updated, deleted or truncated.
CREATE FUNCTION rollgate_refuse_event_mutation() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rollgate events are immutable: % on events refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_refuse_update_delete
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION rollgate_refuse_event_mutation();

CREATE TRIGGER events_refuse_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION rollgate_refuse_event_mutation();

REVOKE UPDATE, DELETE, TRUNCATE ON events FROM PUBLIC;
