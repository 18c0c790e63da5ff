//! The rows and changes a batch of events works with: states as read, and everything a
//! batch changes, keyed in the order it is written (see [`super::ingest::write`]).

use std::collections::{BTreeMap, BTreeSet};

/// What the consumer needs of a learner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnerRow {
    pub time_zone: String,
    pub hidden: bool,
}

/// A learner's state in a lesson.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LessonRow {
    pub course_id: String,
    pub started_at: i64,
    pub completed_at: Option<i64>,
    pub position_seconds: i64,
    pub last_at: i64,
}

/// A learner's enrollment in a course.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnrollmentRow {
    pub enrolled_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// A profile as a user event states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub display_name: String,
    pub time_zone: String,
    pub registered_at: Option<i64>,
}

/// Additions to one learner's local day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayDelta {
    pub xp: i64,
    pub lessons_completed: i64,
    pub seconds: i64,
}

/// Additions to one course's UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CourseDayDelta {
    pub enrollments: i64,
    pub completions: i64,
    pub ai_hint_requests: i64,
}

/// Additions to the platform's UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlatformDelta {
    pub new_accounts: i64,
    pub enrollments: i64,
    pub completions: i64,
    pub ai_requests: i64,
    pub ai_cost_nano_usd: i64,
}

/// Everything one batch changes. Keys are tuples of ids, dates (`YYYY-MM-DD`) and weeks.
#[derive(Debug, Default)]
pub struct Changes {
    /// Learners that have no row yet (written with defaults).
    pub new_learners: BTreeSet<String>,
    pub profiles: BTreeMap<String, Profile>,
    pub lessons: BTreeMap<(String, String), LessonRow>,
    pub enrollments: BTreeMap<(String, String), EnrollmentRow>,
    /// Course id to (title, instructor id).
    pub courses: BTreeMap<String, (String, String)>,
    /// (course, lesson) to (title, AI hint requests to add).
    pub course_lessons: BTreeMap<(String, String), (String, i64)>,
    pub learner_days: BTreeMap<(String, String), DayDelta>,
    /// (week, scope, learner) to XP to add.
    pub weekly: BTreeMap<(String, String, String), i64>,
    pub course_days: BTreeMap<(String, String), CourseDayDelta>,
    pub course_active: BTreeSet<(String, String, String)>,
    pub active_days: BTreeSet<(String, String)>,
    /// (course, day, currency) to (captured, refunded) to add.
    pub revenue: BTreeMap<(String, String, String), (i64, i64)>,
    pub platform: BTreeMap<String, PlatformDelta>,
}
