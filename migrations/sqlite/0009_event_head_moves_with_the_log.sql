-- The head row moves only with the log: forward, to the last stored event and its hash
-- (the append path does so in the same transaction as its inserts); deleting it is refused.
CREATE TRIGGER event_head_moves_with_the_log BEFORE UPDATE ON event_head
WHEN NEW.id <> OLD.id
  OR NEW.position < OLD.position
  OR NEW.position <> COALESCE((SELECT MAX(position) FROM events), 0)
  OR NEW.hash <> COALESCE((SELECT hash FROM events WHERE position = NEW.position), NEW.hash)
BEGIN
    SELECT RAISE(ABORT, 'rollgate event_head moves only forward, to the last stored event');
END;

CREATE TRIGGER event_head_refuse_delete BEFORE DELETE ON event_head
BEGIN
    SELECT RAISE(ABORT, 'rollgate event_head: DELETE refused');
END;
