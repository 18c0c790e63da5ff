-- Idempotency keys of mutating payment calls: one row per (caller, key), holding the
-- request's fingerprint and, once the first request finished, its answer. ({bytes} is
-- BLOB on SQLite, BYTEA on PostgreSQL.)
CREATE TABLE payment_idempotency (
    scope TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    response {bytes},
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, idempotency_key)
);
