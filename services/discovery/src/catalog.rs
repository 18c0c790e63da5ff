//! The catalog as discovery knows it: courses and lessons as the last event (or reindex)
//! stated them. Only a published course and its lessons are searchable.

/// A course's searchable entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CourseEntry {
    pub id: String,
    pub slug: String,
    pub title: String,
    pub summary: String,
    pub level: String,
    pub language: String,
    pub tags: Vec<String>,
    /// Empty: free.
    pub price_currency: String,
    pub price_minor: i64,
    pub instructor_id: String,
    /// `draft`, `published`, `archived`, or `unlisted` (published once, but absent from
    /// the owning service's catalog at the last reindex).
    pub status: String,
    pub prerequisite_ids: Vec<String>,
}

impl CourseEntry {
    pub fn is_free(&self) -> bool {
        self.price_currency.is_empty() || self.price_minor == 0
    }

    pub fn is_listed(&self) -> bool {
        self.status == "published"
    }
}

/// A lesson's published text, or its tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LessonEntry {
    pub id: String,
    pub course_id: String,
    pub title: String,
    pub markdown: String,
    pub version: i64,
    pub deleted: bool,
}

/// A row as the change feed returns it: the entry and when this database took it.
#[derive(Debug, Clone)]
pub struct Changed<T> {
    pub entry: T,
    pub changed_at: i64,
}
