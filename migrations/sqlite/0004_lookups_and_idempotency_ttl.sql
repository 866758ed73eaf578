-- Deviation -> rollout from the log itself, by index (the decision route looks a deviation
-- up before the read models may have projected it).
CREATE INDEX events_deviation_requested ON events (payload ->> 'deviation_id')
    WHERE event_type = 'DeviationRequested';

-- Idempotency claims belong to one attempt (`claim`), so `record`/`release` touch only
-- their own; records expire (see docs/ARCHITECTURE.md) and are purged by age.
ALTER TABLE idempotency_records ADD COLUMN claim TEXT NOT NULL DEFAULT '';
CREATE INDEX idempotency_records_created_at ON idempotency_records (created_at);
