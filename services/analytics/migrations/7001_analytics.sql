-- The analytics service owns migration versions 7000-7999. Every table is derived from
-- events (the processed-events table makes each apply once); dates are TEXT YYYY-MM-DD,
-- weeks YYYY-Www, moments BIGINT milliseconds since the epoch.

-- Learners as the user events describe them, with their analytics preferences.
CREATE TABLE analytics_learners (
    learner_id         TEXT PRIMARY KEY,
    display_name       TEXT NOT NULL,
    time_zone          TEXT NOT NULL,             -- IANA name; days begin there
    registered_at      BIGINT,                    -- null until user.registered arrives
    leaderboard_hidden BIGINT NOT NULL,
    daily_goal_xp      BIGINT NOT NULL            -- 0: one completed lesson
);

-- Per learner and local day: the aggregates activity and streaks read.
CREATE TABLE analytics_learner_days (
    learner_id        TEXT NOT NULL,
    day               TEXT NOT NULL,              -- in the learner's time zone
    xp                BIGINT NOT NULL,
    lessons_completed BIGINT NOT NULL,
    seconds           BIGINT NOT NULL,            -- of learning
    PRIMARY KEY (learner_id, day)
);

-- Each learner's state in each lesson they touched.
CREATE TABLE analytics_lessons (
    learner_id       TEXT NOT NULL,
    lesson_id        TEXT NOT NULL,
    course_id        TEXT NOT NULL,
    started_at       BIGINT NOT NULL,
    completed_at     BIGINT,
    position_seconds BIGINT NOT NULL,
    last_at          BIGINT NOT NULL,
    PRIMARY KEY (learner_id, lesson_id)
);
CREATE INDEX analytics_lessons_by_course ON analytics_lessons (course_id, learner_id);

-- Each learner's enrollment in each course.
CREATE TABLE analytics_enrollments (
    course_id    TEXT NOT NULL,
    learner_id   TEXT NOT NULL,
    enrolled_at  BIGINT,                          -- when access began
    completed_at BIGINT,
    revoked_at   BIGINT,
    PRIMARY KEY (course_id, learner_id)
);
CREATE INDEX analytics_enrollments_by_learner ON analytics_enrollments (learner_id);
CREATE INDEX analytics_enrollments_completed ON analytics_enrollments (course_id, completed_at);

-- Published courses: whose dashboard is whose.
CREATE TABLE analytics_courses (
    course_id     TEXT PRIMARY KEY,
    title         TEXT NOT NULL,
    instructor_id TEXT NOT NULL
);

-- Lessons of courses as progress events name them, with AI hint requests about them.
CREATE TABLE analytics_course_lessons (
    course_id        TEXT NOT NULL,
    lesson_id        TEXT NOT NULL,
    title            TEXT NOT NULL,
    ai_hint_requests BIGINT NOT NULL,
    PRIMARY KEY (course_id, lesson_id)
);

-- Per course and UTC day.
CREATE TABLE analytics_course_days (
    course_id        TEXT NOT NULL,
    day              TEXT NOT NULL,
    enrollments      BIGINT NOT NULL,
    completions      BIGINT NOT NULL,
    ai_hint_requests BIGINT NOT NULL,
    PRIMARY KEY (course_id, day)
);

-- Who was active in which course on which UTC day (distinct counts per day and week).
CREATE TABLE analytics_course_active (
    course_id  TEXT NOT NULL,
    day        TEXT NOT NULL,
    learner_id TEXT NOT NULL,
    PRIMARY KEY (course_id, day, learner_id)
);

-- Who was active on the platform on which UTC day (daily, weekly, monthly actives).
CREATE TABLE analytics_active_days (
    day        TEXT NOT NULL,
    learner_id TEXT NOT NULL,
    PRIMARY KEY (day, learner_id)
);
CREATE INDEX analytics_active_days_by_learner ON analytics_active_days (learner_id);

-- Payments per course, UTC day and currency, from payment events.
CREATE TABLE analytics_revenue_days (
    course_id      TEXT NOT NULL,
    day            TEXT NOT NULL,
    currency       TEXT NOT NULL,
    captured_minor BIGINT NOT NULL,
    refunded_minor BIGINT NOT NULL,
    PRIMARY KEY (course_id, day, currency)
);
CREATE INDEX analytics_revenue_days_by_day ON analytics_revenue_days (day);

-- The platform per UTC day.
CREATE TABLE analytics_platform_days (
    day              TEXT PRIMARY KEY,
    new_accounts     BIGINT NOT NULL,
    enrollments      BIGINT NOT NULL,
    completions      BIGINT NOT NULL,
    ai_requests      BIGINT NOT NULL,
    ai_cost_nano_usd BIGINT NOT NULL
);

-- Weekly XP per leaderboard: the truth the Redis sorted sets are rebuilt from.
CREATE TABLE analytics_weekly_xp (
    week       TEXT NOT NULL,
    scope      TEXT NOT NULL,                     -- "global" or a course id
    learner_id TEXT NOT NULL,
    xp         BIGINT NOT NULL,
    PRIMARY KEY (week, scope, learner_id)
);
CREATE INDEX analytics_weekly_xp_rank ON analytics_weekly_xp (week, scope, xp, learner_id);
CREATE INDEX analytics_weekly_xp_by_learner ON analytics_weekly_xp (learner_id);
