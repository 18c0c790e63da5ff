-- Feature flags (flagd definitions, one row per flag) and every change to them.
CREATE TABLE flags (
    key        TEXT PRIMARY KEY,
    definition TEXT NOT NULL,                -- flagd's JSON for this flag
    updated_at BIGINT NOT NULL,              -- unix milliseconds
    updated_by TEXT NOT NULL                 -- admin user id, or "file"
);

-- The audit trail: who changed which flag when, from where, before and after.
CREATE TABLE flag_changes (
    id         TEXT PRIMARY KEY,             -- UUIDv7: sorts by time
    key        TEXT NOT NULL,
    actor      TEXT NOT NULL,
    source     TEXT NOT NULL,                -- api | file
    checksum   TEXT NOT NULL,                -- SHA-256 of the file, for source "file"
    previous   TEXT,                         -- NULL: the change created the flag
    definition TEXT,                         -- NULL: the change deleted the flag
    changed_at BIGINT NOT NULL
);

CREATE INDEX flag_changes_key ON flag_changes (key, id);
