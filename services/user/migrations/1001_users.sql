-- The user service owns migration versions 1000-1999.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,          -- UUIDv7: sorts by creation time
    email         TEXT NOT NULL UNIQUE,      -- normalised: trimmed, lower-case
    password_hash TEXT NOT NULL,             -- argon2id PHC string
    display_name  TEXT NOT NULL,
    locale        TEXT NOT NULL,
    time_zone     TEXT NOT NULL,
    role          TEXT NOT NULL,             -- learner | instructor | admin
    tier          TEXT NOT NULL,             -- free | standard | premium
    created_at    BIGINT NOT NULL,           -- unix milliseconds
    updated_at    BIGINT NOT NULL
);

-- Refresh tokens are stored only as SHA-256 hashes. A login starts a family; each refresh
-- marks the presented token rotated and adds its successor to the family. Presenting a
-- rotated token again revokes the whole family.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    rotated_at BIGINT,
    revoked_at BIGINT
);

CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
