-- The course service owns migration versions 2000-2999.
CREATE TABLE courses (
    id               TEXT PRIMARY KEY,
    slug             TEXT NOT NULL UNIQUE,
    title            TEXT NOT NULL,
    summary          TEXT NOT NULL,
    search_text      TEXT NOT NULL,             -- lower(title || ' ' || summary)
    level            TEXT NOT NULL,             -- beginner | intermediate | advanced
    language         TEXT NOT NULL,
    price_currency   TEXT,                      -- NULL: free
    price_minor      BIGINT,
    status           TEXT NOT NULL,             -- draft | published | archived
    instructor_id    TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    published_at     BIGINT                     -- set on first publication; orders the catalog
);
-- Catalog: published courses newest first, filtered by level, language, instructor, price.
CREATE INDEX courses_catalog ON courses (status, published_at, id);
CREATE INDEX courses_instructor ON courses (instructor_id, status);
CREATE INDEX courses_level_language ON courses (level, language);

CREATE TABLE course_tags (
    course_id TEXT NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    tag       TEXT NOT NULL,
    PRIMARY KEY (course_id, tag)
);
CREATE INDEX course_tags_by_tag ON course_tags (tag, course_id);

CREATE TABLE course_prerequisites (
    course_id       TEXT NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    prerequisite_id TEXT NOT NULL REFERENCES courses (id),
    PRIMARY KEY (course_id, prerequisite_id)
);

CREATE TABLE sections (
    id        TEXT PRIMARY KEY,
    course_id TEXT NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    title     TEXT NOT NULL,
    position  BIGINT NOT NULL
);
CREATE INDEX sections_by_course ON sections (course_id, position);

CREATE TABLE lessons (
    id                TEXT PRIMARY KEY,
    section_id        TEXT NOT NULL REFERENCES sections (id) ON DELETE CASCADE,
    course_id         TEXT NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
    title             TEXT NOT NULL,
    kind              TEXT NOT NULL,            -- text | video | quiz
    estimated_minutes BIGINT NOT NULL,
    required          BIGINT NOT NULL,          -- 1: counts toward completion
    position          BIGINT NOT NULL
);
CREATE INDEX lessons_by_section ON lessons (section_id, position);
CREATE INDEX lessons_by_course ON lessons (course_id, required);

CREATE TABLE enrollments (
    id                 TEXT PRIMARY KEY,
    course_id          TEXT NOT NULL REFERENCES courses (id),
    learner_id         TEXT NOT NULL,
    status             TEXT NOT NULL,           -- active | pending_payment | completed | cancelled
    enrolled_at        BIGINT NOT NULL,
    completed_at       BIGINT,
    certificate_number TEXT UNIQUE,
    UNIQUE (course_id, learner_id)
);
CREATE INDEX enrollments_by_learner ON enrollments (learner_id, status, id);
CREATE INDEX enrollments_by_course ON enrollments (course_id, status);

CREATE TABLE lesson_progress (
    learner_id       TEXT NOT NULL,
    lesson_id        TEXT NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    course_id        TEXT NOT NULL,
    percent          BIGINT NOT NULL,
    position_seconds BIGINT NOT NULL,
    completed_at     BIGINT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (learner_id, lesson_id)
);
CREATE INDEX lesson_progress_by_course ON lesson_progress (learner_id, course_id);
CREATE INDEX lesson_progress_by_time ON lesson_progress (learner_id, updated_at);

CREATE TABLE certificates (
    number        TEXT PRIMARY KEY,
    enrollment_id TEXT NOT NULL UNIQUE REFERENCES enrollments (id),
    course_id     TEXT NOT NULL,
    course_title  TEXT NOT NULL,
    learner_id    TEXT NOT NULL,
    completed_at  BIGINT NOT NULL
);
