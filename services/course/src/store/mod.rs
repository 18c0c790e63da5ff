//! The course service's SQL, over sqlx `Any` for SQLite and PostgreSQL alike (the one
//! difference, the two-argument maximum, is chosen from the backend). `tests/store.rs`
//! runs one suite against both.
//!
//! Column types are the portable subset of sqlx `Any`: TEXT and BIGINT (flags are 0/1).
//!
//! Invariants kept here, in transactions:
//! - lesson progress only grows (percent and position take the maximum of old and new),
//!   so retries and out-of-order updates never move a learner backwards;
//! - an enrollment completes once: the `active -> completed` update has exactly one
//!   winner, and only the winner issues the certificate.

use duovarsity_common::Error;
use duovarsity_common::db::{Backend, Database, Migrations};
use duovarsity_common::events::PendingEvent;
use duovarsity_common::events::outbox::Outbox;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

mod catalog;
mod enrollment;
mod progress;
mod sections;

pub fn migrations() -> Migrations {
    Migrations::portable(sqlx::migrate!("./migrations"))
        .with_outbox(OUTBOX_TABLE, 2002)
        .with_applied_events(PROCESSED_TABLE, 2003)
}

/// Events of other services the course service has applied (the payment saga).
pub const PROCESSED_TABLE: &str = "course_processed_events";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CourseRow {
    pub id: String,
    pub slug: String,
    pub title: String,
    pub summary: String,
    pub level: String,
    pub language: String,
    pub price: Option<(String, i64)>,
    pub status: String,
    pub instructor_id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub published_at: Option<i64>,
    pub tags: Vec<String>,
    pub prerequisite_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionRow {
    pub id: String,
    pub course_id: String,
    pub title: String,
    pub position: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LessonRow {
    pub id: String,
    pub section_id: String,
    pub course_id: String,
    pub title: String,
    pub kind: String,
    pub estimated_minutes: i32,
    pub required: bool,
    pub position: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentRow {
    pub id: String,
    pub course_id: String,
    pub learner_id: String,
    pub status: String,
    pub enrolled_at: i64,
    pub completed_at: Option<i64>,
    pub certificate_number: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressRow {
    pub lesson_id: String,
    pub percent: i32,
    pub position_seconds: i32,
    pub completed_at: Option<i64>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateRow {
    pub number: String,
    pub course_id: String,
    pub course_title: String,
    pub learner_id: String,
    pub completed_at: i64,
}

/// Catalog filters; empty strings and `None` mean "any".
#[derive(Debug, Clone, Default)]
pub struct CatalogFilter {
    pub tag: String,
    pub level: String,
    pub language: String,
    pub free: Option<bool>,
    pub instructor_id: String,
    pub query: String,
}

/// Where a catalog page starts: after (published_at, id) in descending order.
pub type CatalogCursor = (i64, String);

/// Course fields to change; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct CoursePatch {
    pub slug: Option<String>,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub level: Option<String>,
    pub language: Option<String>,
    /// `Some(None)` makes the course free.
    pub price: Option<Option<(String, i64)>>,
    pub tags: Option<Vec<String>>,
}

/// Lesson fields to change.
#[derive(Debug, Clone, Default)]
pub struct LessonPatch {
    pub title: Option<String>,
    pub kind: Option<String>,
    pub estimated_minutes: Option<i32>,
    pub required: Option<bool>,
}

/// Enrollment counts by status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnrollmentCounts {
    pub active: i64,
    pub pending_payment: i64,
    pub completed: i64,
    pub cancelled: i64,
}

/// What recording progress led to.
#[derive(Debug, Clone)]
pub struct ProgressOutcome {
    pub progress: ProgressRow,
    pub enrollment: EnrollmentRow,
    /// True for exactly one call: the one that completed the course.
    pub just_completed: bool,
    /// True for the call that first completed the lesson.
    pub lesson_just_completed: bool,
}

/// The events a progress change may cause, built by the domain: the store decides in its
/// transaction which of them happened and writes those to the outbox with the change.
pub struct ProgressEvents {
    /// Every change, built from the progress it left.
    pub progressed: Box<dyn Fn(&ProgressRow) -> PendingEvent + Send + Sync>,
    pub lesson_completed: PendingEvent,
    pub course_completed: PendingEvent,
}

pub struct CourseStore {
    db: Database,
    outbox: Outbox,
}

/// The course service's outbox table.
pub const OUTBOX_TABLE: &str = "course_outbox";

const COURSE_COLUMNS: &str = "id, slug, title, summary, level, language, price_currency, price_minor, status, instructor_id, created_at, updated_at, published_at";
const LESSON_COLUMNS: &str =
    "id, section_id, course_id, title, kind, estimated_minutes, required, position";
const ENROLLMENT_COLUMNS: &str =
    "id, course_id, learner_id, status, enrolled_at, completed_at, certificate_number";

fn course_from_row(row: &AnyRow) -> Result<CourseRow, sqlx::Error> {
    let currency: Option<String> = row.try_get("price_currency")?;
    let minor: Option<i64> = row.try_get("price_minor")?;
    Ok(CourseRow {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        title: row.try_get("title")?,
        summary: row.try_get("summary")?,
        level: row.try_get("level")?,
        language: row.try_get("language")?,
        price: currency.zip(minor),
        status: row.try_get("status")?,
        instructor_id: row.try_get("instructor_id")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        published_at: row.try_get("published_at")?,
        tags: Vec::new(),
        prerequisite_ids: Vec::new(),
    })
}

fn lesson_from_row(row: &AnyRow) -> Result<LessonRow, sqlx::Error> {
    Ok(LessonRow {
        id: row.try_get("id")?,
        section_id: row.try_get("section_id")?,
        course_id: row.try_get("course_id")?,
        title: row.try_get("title")?,
        kind: row.try_get("kind")?,
        estimated_minutes: narrow(row.try_get::<i64, _>("estimated_minutes")?),
        required: row.try_get::<i64, _>("required")? != 0,
        position: narrow(row.try_get::<i64, _>("position")?),
    })
}

fn enrollment_from_row(row: &AnyRow) -> Result<EnrollmentRow, sqlx::Error> {
    Ok(EnrollmentRow {
        id: row.try_get("id")?,
        course_id: row.try_get("course_id")?,
        learner_id: row.try_get("learner_id")?,
        status: row.try_get("status")?,
        enrolled_at: row.try_get("enrolled_at")?,
        completed_at: row.try_get("completed_at")?,
        certificate_number: row.try_get("certificate_number")?,
    })
}

fn progress_from_row(row: &AnyRow) -> Result<ProgressRow, sqlx::Error> {
    Ok(ProgressRow {
        lesson_id: row.try_get("lesson_id")?,
        percent: narrow(row.try_get::<i64, _>("percent")?),
        position_seconds: narrow(row.try_get::<i64, _>("position_seconds")?),
        completed_at: row.try_get("completed_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Small counts are BIGINT in SQL (one integer type decodes on both backends).
fn narrow(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn search_text(title: &str, summary: &str) -> String {
    format!("{} {}", title, summary).to_lowercase()
}

impl CourseStore {
    pub fn new(db: Database) -> Self {
        Self {
            db,
            outbox: Outbox::new(OUTBOX_TABLE),
        }
    }

    /// The outbox the store's writes add their events to.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// SQL for the larger of two values.
    fn greatest(&self) -> &'static str {
        match self.db.backend() {
            Backend::Sqlite => "MAX",
            Backend::Postgres => "GREATEST",
        }
    }

    /// Enqueues `events` and commits; wakes the relay.
    async fn commit_with<'e>(
        &self,
        mut tx: Transaction<'_, Any>,
        events: impl Iterator<Item = &'e PendingEvent>,
    ) -> Result<(), Error> {
        let mut any = false;
        for event in events {
            self.outbox.enqueue_event(&mut tx, event).await?;
            any = true;
        }
        tx.commit().await?;
        if any {
            self.outbox.wake();
        }
        Ok(())
    }
}

/// Tables whose rows have an explicit order within a parent.
#[derive(Debug, Clone, Copy)]
pub enum Reorderable {
    Sections,
    Lessons,
}

enum BindValue {
    Text(String),
    Int(i64),
}

fn escape_like(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

async fn write_tags(
    tx: &mut Transaction<'_, Any>,
    course_id: &str,
    tags: &[String],
) -> Result<(), Error> {
    for tag in tags {
        sqlx::query("INSERT INTO course_tags (course_id, tag) VALUES ($1, $2)")
            .bind(course_id)
            .bind(tag)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
