//! The tables every event-producing or event-consuming service has, defined once: a
//! service adds them to its [`Migrations`] at a version of its own range, with its own
//! table name (several services may share one PostgreSQL database).
//!
//! - The outbox (`<service>_outbox`): events written in the transaction of the state change
//!   they describe, published afterwards by [`super::outbox::OutboxRelay`].
//! - The applied-events table (`<service>_processed_events`): the `event_id`s that the
//!   idempotent [`super::consumer::Consumer`] has applied, per consumer group.

use crate::db::{Backend, Migrations};

impl Migrations {
    /// Adds the outbox table `table` at `version`.
    pub fn with_outbox(self, table: &'static str, version: i64) -> Self {
        self.with(version, "outbox", |backend| outbox_sql(table, backend))
    }

    /// Adds the applied-events table `table` at `version`.
    pub fn with_applied_events(self, table: &'static str, version: i64) -> Self {
        self.with(version, "applied events", |_| applied_events_sql(table))
    }
}

/// The text is what the services' own `*_outbox.sql` files held before this module, byte
/// for byte, so databases migrated by earlier builds keep matching sqlx's checksums.
fn outbox_sql(table: &str, backend: Backend) -> String {
    let (blob, pad) = match backend {
        Backend::Sqlite => ("BLOB", "      "),
        Backend::Postgres => ("BYTEA", "     "),
    };
    format!(
        "-- Events written in the same transaction as the state change; the relay publishes them.
CREATE TABLE {table} (
    id         TEXT PRIMARY KEY,   -- the event id (UUIDv7): orders publication
    topic      TEXT NOT NULL,
    event_key  TEXT NOT NULL,      -- the aggregate id
    payload    {blob} NOT NULL,{pad}-- an encoded duovarsity.events.v1.Envelope
    headers    TEXT NOT NULL,      -- JSON list of [name, value]
    created_at BIGINT NOT NULL,
    sent_at    BIGINT
);
CREATE INDEX {table}_pending ON {table} (sent_at, id);
"
    )
}

fn applied_events_sql(table: &str) -> String {
    format!(
        "-- Events the idempotent consumer has applied, recorded with their effect.
CREATE TABLE {table} (
    consumer_group TEXT NOT NULL,
    event_id       TEXT NOT NULL,
    processed_at   BIGINT NOT NULL,
    PRIMARY KEY (consumer_group, event_id)
);
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Earlier builds applied these files; a changed text would fail sqlx's checksum.
    #[test]
    fn the_outbox_matches_the_text_earlier_builds_applied() {
        let sqlite = "-- Events written in the same transaction as the state change; the relay publishes them.
CREATE TABLE course_outbox (
    id         TEXT PRIMARY KEY,   -- the event id (UUIDv7): orders publication
    topic      TEXT NOT NULL,
    event_key  TEXT NOT NULL,      -- the aggregate id
    payload    BLOB NOT NULL,      -- an encoded duovarsity.events.v1.Envelope
    headers    TEXT NOT NULL,      -- JSON list of [name, value]
    created_at BIGINT NOT NULL,
    sent_at    BIGINT
);
CREATE INDEX course_outbox_pending ON course_outbox (sent_at, id);
";
        assert_eq!(outbox_sql("course_outbox", Backend::Sqlite), sqlite);
        assert_eq!(
            outbox_sql("course_outbox", Backend::Postgres),
            sqlite.replace(
                "payload    BLOB NOT NULL,      --",
                "payload    BYTEA NOT NULL,     --"
            )
        );
    }
}
