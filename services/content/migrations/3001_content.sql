-- The content service owns migration versions 3000-3999.
CREATE TABLE lesson_drafts (
    lesson_id      TEXT PRIMARY KEY,
    markdown       TEXT NOT NULL,
    attachment_ids TEXT NOT NULL,              -- media ids, comma-separated, in order
    updated_at     BIGINT NOT NULL,
    updated_by     TEXT NOT NULL
);

-- Published versions never change; a new publication adds the next version.
CREATE TABLE lesson_versions (
    lesson_id      TEXT NOT NULL,
    version        BIGINT NOT NULL,
    course_id      TEXT NOT NULL,
    markdown       TEXT NOT NULL,
    attachment_ids TEXT NOT NULL,
    published_at   BIGINT NOT NULL,
    published_by   TEXT NOT NULL,
    PRIMARY KEY (lesson_id, version)
);

CREATE TABLE media (
    id           TEXT PRIMARY KEY,
    lesson_id    TEXT NOT NULL,
    filename     TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size_bytes   BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    object_key   TEXT NOT NULL,                -- path in the object store
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL
);
CREATE INDEX media_by_lesson ON media (lesson_id, created_at);
