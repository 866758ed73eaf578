-- Rights of the role `rollgate serve` connects as, on PostgreSQL, when the schema is owned
-- by another role that runs `rollgate migrate` (see docs/OPERATIONS.md).
--
-- Run as the schema owner (or a superuser) after `rollgate migrate`, and again after every
-- upgrade's `rollgate migrate` (new tables need their grants). Every statement can be run
-- again. Create the role first, e.g. `CREATE ROLE rollgate_app LOGIN PASSWORD '...';`.
-- The tests run this file with the role name replaced.

GRANT USAGE ON SCHEMA public TO rollgate_app;

-- The read models, idempotency records, leases and delivery checkpoints are the server's
-- to change.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO rollgate_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO rollgate_app;

-- The log: read and append only. Its triggers refuse UPDATE, DELETE and TRUNCATE for every
-- role; without ownership the server cannot switch them off or alter the table.
REVOKE UPDATE, DELETE, TRUNCATE ON events FROM rollgate_app;

-- The head row: locked and moved by the append path (UPDATE, checked by a trigger that lets
-- it move only forward to the last stored event), never deleted.
REVOKE DELETE, TRUNCATE ON event_head FROM rollgate_app;

-- Migrations are applied by the owner; the server only reads which are applied.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON _sqlx_migrations FROM rollgate_app;
