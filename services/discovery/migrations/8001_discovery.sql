-- The discovery service owns migration versions 8000-8999. Every table is derived from
-- events (or from `duovarsity discovery reindex`, which asks the owning services); moments
-- are BIGINT milliseconds since the epoch.
--
-- `event_at` is when the change happened at its source (the event's occurred_at): a row
-- takes a change only if it is at least as recent, so a late or replayed event never
-- undoes a newer one. `changed_at` is when this database took the change: every replica
-- follows the catalog tables by it (docs/architecture.md, "Search and recommendations").

-- Courses as their latest course.updated / course.archived says.
CREATE TABLE discovery_courses (
    course_id      TEXT PRIMARY KEY,
    slug           TEXT NOT NULL,
    title          TEXT NOT NULL,
    summary        TEXT NOT NULL,
    level          TEXT NOT NULL,
    language       TEXT NOT NULL,
    tags           TEXT NOT NULL,                -- one per line
    price_currency TEXT NOT NULL,                -- empty: free
    price_minor    BIGINT NOT NULL,
    instructor_id  TEXT NOT NULL,
    status         TEXT NOT NULL,                -- draft, published, archived, unlisted
    prerequisite_ids TEXT NOT NULL,              -- one per line
    event_at       BIGINT NOT NULL,
    changed_at     BIGINT NOT NULL
);
CREATE INDEX discovery_courses_changed ON discovery_courses (changed_at);

-- Lessons with their published text; a deleted lesson stays as a tombstone (deleted = 1)
-- so that an older publication arriving late cannot bring it back.
CREATE TABLE discovery_lessons (
    lesson_id   TEXT PRIMARY KEY,
    course_id   TEXT NOT NULL,
    title       TEXT NOT NULL,
    markdown    TEXT NOT NULL,
    version     BIGINT NOT NULL,
    deleted     BIGINT NOT NULL,
    event_at    BIGINT NOT NULL,
    changed_at  BIGINT NOT NULL
);
CREATE INDEX discovery_lessons_course ON discovery_lessons (course_id);
CREATE INDEX discovery_lessons_changed ON discovery_lessons (changed_at);

-- Who holds which course (a paid lesson's text is searchable by its owners only), since
-- when, and when they last learned in it.
CREATE TABLE discovery_enrollments (
    learner_id  TEXT NOT NULL,
    course_id   TEXT NOT NULL,
    status      TEXT NOT NULL,                   -- active, pending_payment, completed, revoked
    enrolled_at BIGINT NOT NULL,
    active_at   BIGINT NOT NULL,
    event_at    BIGINT NOT NULL,
    PRIMARY KEY (learner_id, course_id)
);

-- Lessons each learner completed ("continue" skips them).
CREATE TABLE discovery_completed_lessons (
    learner_id TEXT NOT NULL,
    lesson_id  TEXT NOT NULL,
    course_id  TEXT NOT NULL,
    PRIMARY KEY (learner_id, lesson_id)
);

-- The item-to-item model, kept by every enrollment that starts or ends holding a course
-- (active or completed): learners per course, and learners per ordered pair of courses.
CREATE TABLE discovery_course_learners (
    course_id TEXT PRIMARY KEY,
    learners  BIGINT NOT NULL
);
CREATE TABLE discovery_course_pairs (
    course_id TEXT NOT NULL,
    other_id  TEXT NOT NULL,
    learners  BIGINT NOT NULL,
    PRIMARY KEY (course_id, other_id)
);
CREATE INDEX discovery_course_pairs_strongest ON discovery_course_pairs (course_id, learners);

-- Prerequisites of each course, by the course they require ("ready for").
CREATE TABLE discovery_prerequisites (
    course_id       TEXT NOT NULL,
    prerequisite_id TEXT NOT NULL,
    PRIMARY KEY (course_id, prerequisite_id)
);
CREATE INDEX discovery_prerequisites_required ON discovery_prerequisites (prerequisite_id);
