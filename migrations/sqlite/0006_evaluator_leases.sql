-- Which instance runs the Prometheus evaluator of a rollout. One row per rollout: the owner
-- renews its lease while it evaluates; another instance takes the row over only once
-- expires_at (Unix milliseconds) has passed. SQLite serves one instance, which always holds it.
CREATE TABLE evaluator_leases (
    rollout_id  TEXT    NOT NULL PRIMARY KEY,
    owner       TEXT    NOT NULL,
    expires_at  INTEGER NOT NULL,
    renewed_at  INTEGER NOT NULL
);
