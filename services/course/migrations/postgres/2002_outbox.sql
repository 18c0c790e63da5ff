-- Events written in the same transaction as the state change; the relay publishes them.
CREATE TABLE course_outbox (
    id         TEXT PRIMARY KEY,   -- the event id (UUIDv7): orders publication
    topic      TEXT NOT NULL,
    event_key  TEXT NOT NULL,      -- the aggregate id
    payload    BYTEA NOT NULL,     -- an encoded duovarsity.events.v1.Envelope
    headers    TEXT NOT NULL,      -- JSON list of [name, value]
    created_at BIGINT NOT NULL,
    sent_at    BIGINT
);
CREATE INDEX course_outbox_pending ON course_outbox (sent_at, id);
