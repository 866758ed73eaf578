-- GitHub deployment protection rules: the binding naming a repository and environment, by
-- index. A read model of the projector (`github_bindings`, rebuilt from the log like the
-- others): one row per binding whose target is a GitHub environment; the repository in
-- lower case (GitHub compares owner/name without case), the environment as written.
CREATE TABLE github_bindings (
    binding_id     TEXT   PRIMARY KEY,
    repository     TEXT   NOT NULL,
    environment    TEXT   NOT NULL,
    rollout_id     TEXT   NOT NULL,
    team           TEXT   NOT NULL,
    status         TEXT   NOT NULL,
    position       INTEGER NOT NULL,
    last_position  INTEGER NOT NULL
);
CREATE INDEX github_bindings_active ON github_bindings (repository, environment, position)
    WHERE status = 'active';
