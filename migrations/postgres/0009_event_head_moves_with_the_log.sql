-- The head row moves only with the log: forward, to the last stored event and its hash.
-- The append path is the only writer that does so (in the same transaction as its
-- inserts); any other change to the row, or deleting or truncating it, is refused. With a
-- serving role that does not own the tables (see docs/OPERATIONS.md), these triggers cannot
-- be switched off by the application.
CREATE FUNCTION rollgate_check_head_move() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    last_position BIGINT;
    last_hash     TEXT;
BEGIN
    IF TG_OP <> 'UPDATE' THEN
        RAISE EXCEPTION 'rollgate event_head: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.id <> OLD.id OR NEW.position < OLD.position THEN
        RAISE EXCEPTION 'rollgate event_head never moves back (% to %)', OLD.position, NEW.position
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT position, hash INTO last_position, last_hash
    FROM events ORDER BY position DESC LIMIT 1;
    IF NEW.position IS DISTINCT FROM COALESCE(last_position, 0)
       OR (last_position IS NOT NULL AND NEW.hash IS DISTINCT FROM last_hash) THEN
        RAISE EXCEPTION 'rollgate event_head moves only to the last stored event'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER event_head_moves_with_the_log
    BEFORE UPDATE OR DELETE ON event_head
    FOR EACH ROW EXECUTE FUNCTION rollgate_check_head_move();

CREATE TRIGGER event_head_refuse_truncate
    BEFORE TRUNCATE ON event_head
    FOR EACH STATEMENT EXECUTE FUNCTION rollgate_check_head_move();

REVOKE DELETE, TRUNCATE ON event_head FROM PUBLIC;
