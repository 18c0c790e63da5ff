-- Announcements to a course's room, numbered per course: a socket resumes after the last
-- one it saw.
CREATE TABLE announcements (
    id         TEXT PRIMARY KEY,          -- UUIDv7
    course_id  TEXT NOT NULL,
    seq        BIGINT NOT NULL,           -- per course, in commit order (unique)
    author_id  TEXT NOT NULL,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX announcements_course_seq ON announcements (course_id, seq);

-- Who is enrolled in each course (active or completed), kept from enrollment.v1: the
-- inboxes an announcement reaches.
CREATE TABLE course_members (
    course_id TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    PRIMARY KEY (course_id, user_id)
);

-- When each user's last live socket closed.
CREATE TABLE last_seen (
    user_id TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL
);
