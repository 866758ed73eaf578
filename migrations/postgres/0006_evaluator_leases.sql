-- Which instance runs the Prometheus evaluator of a rollout. One row per rollout: the owner
-- renews its lease while it evaluates; another instance takes the row over only once
-- expires_at (Unix milliseconds) has passed, so a rollout has one evaluator at a time.
CREATE TABLE evaluator_leases (
    rollout_id  TEXT   NOT NULL PRIMARY KEY,
    owner       TEXT   NOT NULL,
    expires_at  BIGINT NOT NULL,
    renewed_at  BIGINT NOT NULL
);
