-- Answers to POST requests carrying an Idempotency-Key, so a retry gets the first answer
-- and writes nothing. status = 0 marks a request still being handled.
CREATE TABLE idempotency_records (
    principal     TEXT        NOT NULL,
    key           TEXT        NOT NULL,
    request_hash  TEXT        NOT NULL,
    status        INTEGER     NOT NULL,
    etag          TEXT,
    location      TEXT,
    body          TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (principal, key)
);
