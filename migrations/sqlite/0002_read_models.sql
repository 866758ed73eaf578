-- Read models: projections of the event log, rebuilt from position 0 at will.
-- Each read model has a checkpoint row; the projector updates a model's rows and its
-- checkpoint in one transaction, under BEGIN IMMEDIATE (the database write lock) while it
-- applies a batch, so no two instances apply the same events.
-- JSON values are kept as text and times as RFC 3339 text (the PostgreSQL schema is the same,
-- with TIMESTAMPTZ times).

CREATE TABLE projection_checkpoints (
    name      TEXT   PRIMARY KEY,
    position  INTEGER NOT NULL CHECK (position >= 0)
);

-- One row per rollout.
CREATE TABLE rollout_summaries (
    rollout_id        TEXT      PRIMARY KEY,
    team              TEXT      NOT NULL,
    feature_key       TEXT      NOT NULL,
    title             TEXT      NOT NULL,
    status            TEXT      NOT NULL,
    stage_index       INTEGER,
    stage_name        TEXT,
    stage_count       INTEGER           NOT NULL,
    exposure          REAL             NOT NULL,
    plan_revision     INTEGER           NOT NULL,
    -- JSON: [{"name","percentage"}] of the current plan revision.
    stages            TEXT      NOT NULL,
    created_by        TEXT      NOT NULL,
    created_at        TEXT      NOT NULL,
    updated_at        TEXT      NOT NULL,
    created_position  INTEGER           NOT NULL UNIQUE,
    last_position     INTEGER           NOT NULL
);
CREATE INDEX rollout_summaries_team ON rollout_summaries (team, created_position);
CREATE INDEX rollout_summaries_status ON rollout_summaries (status, created_position);
CREATE INDEX rollout_summaries_feature ON rollout_summaries (feature_key, created_position);

-- One row per event.
CREATE TABLE audit_trail (
    position        INTEGER      PRIMARY KEY,
    stream          TEXT NOT NULL,
    rollout_id      TEXT,
    team            TEXT,
    event_type      TEXT NOT NULL,
    actor_id        TEXT,
    -- JSON array of role names, as recorded in the event's metadata.
    actor_roles     TEXT NOT NULL,
    recorded_at     TEXT NOT NULL,
    request_id      TEXT,
    correlation_id  TEXT,
    summary         TEXT NOT NULL,
    stage           INTEGER
);
CREATE INDEX audit_trail_team ON audit_trail (team, position);
CREATE INDEX audit_trail_actor ON audit_trail (actor_id, position);
CREATE INDEX audit_trail_rollout ON audit_trail (rollout_id, position);
CREATE INDEX audit_trail_type ON audit_trail (event_type, position);
CREATE INDEX audit_trail_recorded ON audit_trail (recorded_at, position);

-- Decisions: approvals, rejections, deviations, rollbacks, aborts, freezes, policy
-- publications and recorded decisions, each with the policy version in force.
CREATE TABLE decision_log (
    position        INTEGER      PRIMARY KEY,
    kind            TEXT NOT NULL,
    stream          TEXT NOT NULL,
    rollout_id      TEXT,
    team            TEXT,
    subject_id      TEXT,
    stage           INTEGER,
    actor_id        TEXT,
    actor_roles     TEXT NOT NULL,
    policy_version  INTEGER,
    decided_at      TEXT NOT NULL,
    recorded_at     TEXT NOT NULL,
    summary         TEXT NOT NULL,
    title           TEXT,
    rationale       TEXT,
    -- JSON array of strings.
    alternatives    TEXT NOT NULL,
    outcome         TEXT
);
CREATE INDEX decision_log_team ON decision_log (team, position);
CREATE INDEX decision_log_rollout ON decision_log (rollout_id, position);
CREATE INDEX decision_log_kind ON decision_log (kind, position);

-- Open advance requests.
CREATE TABLE approver_inbox (
    request_id     TEXT PRIMARY KEY,
    rollout_id     TEXT NOT NULL,
    team           TEXT NOT NULL,
    from_stage     INTEGER,
    to_stage       INTEGER      NOT NULL,
    to_stage_name  TEXT,
    plan_revision  INTEGER      NOT NULL,
    -- JSON: the target stage's quorum rules [{"roles":[..],"count":n}].
    quorum         TEXT NOT NULL,
    -- The roles named by the quorum rules, as ",role,role," (matched with LIKE).
    quorum_roles   TEXT NOT NULL,
    requested_by   TEXT NOT NULL,
    requested_at   TEXT NOT NULL,
    position       INTEGER      NOT NULL UNIQUE
);
CREATE INDEX approver_inbox_rollout ON approver_inbox (rollout_id);
CREATE INDEX approver_inbox_team ON approver_inbox (team, position);

-- Approvals given so far on open requests (under the current plan revision).
CREATE TABLE approver_inbox_approvals (
    request_id   TEXT NOT NULL,
    approver     TEXT NOT NULL,
    -- JSON array of the roles the approval was given under.
    roles        TEXT NOT NULL,
    approved_at  TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    position     INTEGER      NOT NULL,
    PRIMARY KEY (request_id, approver)
);

-- The quorum rules of each rollout's current plan, so requests can name theirs.
CREATE TABLE approver_inbox_plans (
    rollout_id     TEXT   PRIMARY KEY,
    plan_revision  INTEGER NOT NULL,
    -- JSON: [{"name","approvals":[{"roles":[..],"count":n}]}]
    stages         TEXT   NOT NULL
);

-- Deviation id -> rollout, to route decisions on deviations.
CREATE TABLE deviation_index (
    deviation_id   TEXT   PRIMARY KEY,
    rollout_id     TEXT   NOT NULL,
    team           TEXT   NOT NULL,
    stage          INTEGER,
    status         TEXT   NOT NULL,
    requested_by   TEXT   NOT NULL,
    position       INTEGER NOT NULL,
    last_position  INTEGER NOT NULL
);
