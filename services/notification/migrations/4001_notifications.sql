-- The notification service owns migration versions 4000-4999.
CREATE TABLE notifications (
    id         TEXT PRIMARY KEY,          -- UUIDv7: newest-first order
    user_id    TEXT NOT NULL,
    seq        BIGINT NOT NULL,           -- per user, in commit order (unique)
    category   TEXT NOT NULL,             -- account | learning | billing
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    event_id   TEXT NOT NULL,             -- the event that caused it
    created_at BIGINT NOT NULL,
    read_at    BIGINT
);
CREATE INDEX notifications_by_user ON notifications (user_id, id);
CREATE UNIQUE INDEX notifications_user_seq ON notifications (user_id, seq);
CREATE INDEX notifications_unread ON notifications (user_id, read_at);

-- Who to write to: kept from user.registered events.
CREATE TABLE recipients (
    user_id      TEXT PRIMARY KEY,
    email        TEXT NOT NULL,
    display_name TEXT NOT NULL
);

-- A missing row means the default (both channels on).
CREATE TABLE notification_preferences (
    user_id  TEXT NOT NULL,
    category TEXT NOT NULL,
    in_app   BIGINT NOT NULL,
    email    BIGINT NOT NULL,
    PRIMARY KEY (user_id, category)
);

-- Mail written with the notification, sent by the mailer afterwards.
CREATE TABLE mail_outbox (
    id         TEXT PRIMARY KEY,
    recipient  TEXT NOT NULL,             -- the address
    recipient_name TEXT NOT NULL,
    subject    TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at    BIGINT,
    attempts   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX mail_outbox_pending ON mail_outbox (sent_at, id);
