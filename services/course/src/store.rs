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

pub fn migrations() -> Migrations {
    Migrations::new(
        sqlx::migrate!("./migrations/sqlite"),
        sqlx::migrate!("./migrations/postgres"),
    )
    .with_outbox(OUTBOX_TABLE, 2002)
}

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

    pub async fn insert_course(&self, course: &CourseRow) -> Result<(), Error> {
        let mut tx = self.db.writer().begin().await?;
        let sql = format!(
            "INSERT INTO courses ({COURSE_COLUMNS}, search_text) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        );
        let result = sqlx::query(&sql)
            .bind(&course.id)
            .bind(&course.slug)
            .bind(&course.title)
            .bind(&course.summary)
            .bind(&course.level)
            .bind(&course.language)
            .bind(course.price.as_ref().map(|p| p.0.clone()))
            .bind(course.price.as_ref().map(|p| p.1))
            .bind(&course.status)
            .bind(&course.instructor_id)
            .bind(course.created_at)
            .bind(course.updated_at)
            .bind(course.published_at)
            .bind(search_text(&course.title, &course.summary))
            .execute(&mut *tx)
            .await;
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(Error::AlreadyExists {
                    reason: "SLUG_TAKEN",
                    message: format!("the slug {:?} is taken", course.slug),
                });
            }
            other => {
                other?;
            }
        }
        write_tags(&mut tx, &course.id, &course.tags).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn update_course(
        &self,
        id: &str,
        patch: &CoursePatch,
        now: i64,
    ) -> Result<(), Error> {
        let mut tx = self.db.writer().begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {COURSE_COLUMNS} FROM courses WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| Error::not_found(format!("course {id}")))?;
        let current = course_from_row(&row)?;
        let title = patch.title.clone().unwrap_or(current.title);
        let summary = patch.summary.clone().unwrap_or(current.summary);
        let price = patch.price.clone().unwrap_or(current.price);
        let result = sqlx::query(
            "UPDATE courses SET slug = $1, title = $2, summary = $3, search_text = $4, level = $5, \
             language = $6, price_currency = $7, price_minor = $8, updated_at = $9 WHERE id = $10",
        )
        .bind(patch.slug.clone().unwrap_or(current.slug))
        .bind(&title)
        .bind(&summary)
        .bind(search_text(&title, &summary))
        .bind(patch.level.clone().unwrap_or(current.level))
        .bind(patch.language.clone().unwrap_or(current.language))
        .bind(price.as_ref().map(|p| p.0.clone()))
        .bind(price.as_ref().map(|p| p.1))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await;
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(Error::AlreadyExists {
                    reason: "SLUG_TAKEN",
                    message: "the slug is taken".into(),
                });
            }
            other => {
                other?;
            }
        }
        if let Some(tags) = &patch.tags {
            sqlx::query("DELETE FROM course_tags WHERE course_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            write_tags(&mut tx, id, tags).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Changes the status, writing `event` in the same transaction.
    pub async fn set_status(
        &self,
        id: &str,
        status: &str,
        now: i64,
        event: Option<&PendingEvent>,
    ) -> Result<(), Error> {
        let mut tx = self.db.writer().begin().await?;
        sqlx::query(
            "UPDATE courses SET status = $1, updated_at = $2, \
             published_at = CASE WHEN $1 = 'published' AND published_at IS NULL THEN $2 ELSE published_at END \
             WHERE id = $3",
        )
        .bind(status)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        self.commit_with(tx, event.into_iter()).await
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

    /// A course by id or slug, with its tags and prerequisites.
    pub async fn course(&self, id_or_slug: &str) -> Result<Option<CourseRow>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {COURSE_COLUMNS} FROM courses WHERE id = $1 OR slug = $1"
        ))
        .bind(id_or_slug)
        .fetch_optional(self.db.writer())
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut course = [course_from_row(&row)?];
        // Read-your-writes: the caller may have just changed this course.
        self.attach_tags_and_prerequisites(&mut course, self.db.writer())
            .await?;
        let [course] = course;
        Ok(Some(course))
    }

    async fn column(&self, sql: &str, id: &str) -> Result<Vec<String>, Error> {
        let rows = sqlx::query(sql)
            .bind(id)
            .fetch_all(self.db.writer())
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?)
    }

    /// Sections in order, each with its lessons in order.
    pub async fn outline(
        &self,
        course_id: &str,
    ) -> Result<Vec<(SectionRow, Vec<LessonRow>)>, Error> {
        let sections = sqlx::query("SELECT id, course_id, title, position FROM sections WHERE course_id = $1 ORDER BY position, id")
            .bind(course_id)
            .fetch_all(self.db.writer())
            .await?;
        let lessons = sqlx::query(&format!(
            "SELECT {LESSON_COLUMNS} FROM lessons WHERE course_id = $1 ORDER BY position, id"
        ))
        .bind(course_id)
        .fetch_all(self.db.writer())
        .await?;
        let lessons: Vec<LessonRow> = lessons
            .iter()
            .map(lesson_from_row)
            .collect::<Result<_, _>>()?;
        let mut outline = Vec::with_capacity(sections.len());
        for row in &sections {
            let section = SectionRow {
                id: row.try_get("id")?,
                course_id: row.try_get("course_id")?,
                title: row.try_get("title")?,
                position: narrow(row.try_get::<i64, _>("position")?),
            };
            let own = lessons
                .iter()
                .filter(|l| l.section_id == section.id)
                .cloned()
                .collect();
            outline.push((section, own));
        }
        Ok(outline)
    }

    /// Published courses matching `filter`, newest first, after `cursor`.
    pub async fn list_published(
        &self,
        filter: &CatalogFilter,
        cursor: Option<&CatalogCursor>,
        limit: u32,
    ) -> Result<Vec<CourseRow>, Error> {
        let mut sql = format!("SELECT {COURSE_COLUMNS} FROM courses c WHERE status = 'published'");
        let mut binds: Vec<BindValue> = Vec::new();
        let next = |value: BindValue, binds: &mut Vec<BindValue>| {
            binds.push(value);
            format!("${}", binds.len())
        };
        if !filter.tag.is_empty() {
            let p = next(BindValue::Text(filter.tag.clone()), &mut binds);
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM course_tags t WHERE t.course_id = c.id AND t.tag = {p})"
            ));
        }
        for (column, value) in [
            ("level", &filter.level),
            ("language", &filter.language),
            ("instructor_id", &filter.instructor_id),
        ] {
            if !value.is_empty() {
                let p = next(BindValue::Text(value.clone()), &mut binds);
                sql.push_str(&format!(" AND {column} = {p}"));
            }
        }
        match filter.free {
            Some(true) => sql.push_str(" AND price_minor IS NULL"),
            Some(false) => sql.push_str(" AND price_minor IS NOT NULL"),
            None => {}
        }
        if !filter.query.is_empty() {
            let pattern = format!("%{}%", escape_like(&filter.query.to_lowercase()));
            let p = next(BindValue::Text(pattern), &mut binds);
            sql.push_str(&format!(" AND search_text LIKE {p} ESCAPE '\\'"));
        }
        if let Some((published_at, id)) = cursor {
            let a = next(BindValue::Int(*published_at), &mut binds);
            let b = next(BindValue::Int(*published_at), &mut binds);
            let c = next(BindValue::Text(id.clone()), &mut binds);
            sql.push_str(&format!(
                " AND (published_at < {a} OR (published_at = {b} AND id < {c}))"
            ));
        }
        let l = next(BindValue::Int(i64::from(limit)), &mut binds);
        sql.push_str(&format!(" ORDER BY published_at DESC, id DESC LIMIT {l}"));
        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = match bind {
                BindValue::Text(text) => query.bind(text),
                BindValue::Int(n) => query.bind(n),
            };
        }
        let rows = query.fetch_all(self.db.reader()).await?;
        let mut courses: Vec<CourseRow> =
            rows.iter().map(course_from_row).collect::<Result<_, _>>()?;
        self.attach_tags_and_prerequisites(&mut courses, self.db.reader())
            .await?;
        Ok(courses)
    }

    /// Fills tags and prerequisites of a page of courses with two queries, not two per course.
    async fn attach_tags_and_prerequisites(
        &self,
        courses: &mut [CourseRow],
        pool: &sqlx::AnyPool,
    ) -> Result<(), Error> {
        if courses.is_empty() {
            return Ok(());
        }
        let placeholders: Vec<String> = (1..=courses.len()).map(|n| format!("${n}")).collect();
        let list = placeholders.join(", ");
        for (sql, is_tags) in [
            (
                format!(
                    "SELECT course_id, tag AS value FROM course_tags WHERE course_id IN ({list}) ORDER BY tag"
                ),
                true,
            ),
            (
                format!(
                    "SELECT course_id, prerequisite_id AS value FROM course_prerequisites WHERE course_id IN ({list}) ORDER BY prerequisite_id"
                ),
                false,
            ),
        ] {
            let mut query = sqlx::query(&sql);
            for course in courses.iter() {
                query = query.bind(course.id.clone());
            }
            for row in query.fetch_all(pool).await? {
                let course_id: String = row.try_get("course_id")?;
                let value: String = row.try_get("value")?;
                if let Some(course) = courses.iter_mut().find(|c| c.id == course_id) {
                    if is_tags {
                        course.tags.push(value)
                    } else {
                        course.prerequisite_ids.push(value)
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn set_prerequisites(&self, course_id: &str, ids: &[String]) -> Result<(), Error> {
        let mut tx = self.db.writer().begin().await?;
        sqlx::query("DELETE FROM course_prerequisites WHERE course_id = $1")
            .bind(course_id)
            .execute(&mut *tx)
            .await?;
        for id in ids {
            sqlx::query(
                "INSERT INTO course_prerequisites (course_id, prerequisite_id) VALUES ($1, $2)",
            )
            .bind(course_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn insert_section(&self, section: &SectionRow) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO sections (id, course_id, title, position) VALUES ($1, $2, $3, \
             (SELECT COALESCE(MAX(position), 0) + 1 FROM sections WHERE course_id = $2))",
        )
        .bind(&section.id)
        .bind(&section.course_id)
        .bind(&section.title)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    pub async fn section(&self, id: &str) -> Result<Option<SectionRow>, Error> {
        let row = sqlx::query("SELECT id, course_id, title, position FROM sections WHERE id = $1")
            .bind(id)
            .fetch_optional(self.db.writer())
            .await?;
        Ok(match row {
            Some(row) => Some(SectionRow {
                id: row.try_get("id")?,
                course_id: row.try_get("course_id")?,
                title: row.try_get("title")?,
                position: narrow(row.try_get::<i64, _>("position")?),
            }),
            None => None,
        })
    }

    pub async fn rename_section(&self, id: &str, title: &str) -> Result<(), Error> {
        sqlx::query("UPDATE sections SET title = $1 WHERE id = $2")
            .bind(title)
            .bind(id)
            .execute(self.db.writer())
            .await?;
        Ok(())
    }

    pub async fn delete_section(&self, id: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM sections WHERE id = $1")
            .bind(id)
            .execute(self.db.writer())
            .await?;
        Ok(())
    }

    /// Renumbers `table` rows of one parent in the given order. The caller has checked
    /// that `ids` are exactly the parent's rows.
    pub async fn reorder(&self, table: Reorderable, ids: &[String]) -> Result<(), Error> {
        let mut tx = self.db.writer().begin().await?;
        let sql = match table {
            Reorderable::Sections => "UPDATE sections SET position = $1 WHERE id = $2",
            Reorderable::Lessons => "UPDATE lessons SET position = $1 WHERE id = $2",
        };
        for (index, id) in ids.iter().enumerate() {
            sqlx::query(sql)
                .bind(i64::try_from(index + 1).unwrap_or(i64::MAX))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn section_ids(&self, course_id: &str) -> Result<Vec<String>, Error> {
        self.column(
            "SELECT id FROM sections WHERE course_id = $1 ORDER BY position, id",
            course_id,
        )
        .await
    }

    pub async fn lesson_ids(&self, section_id: &str) -> Result<Vec<String>, Error> {
        self.column(
            "SELECT id FROM lessons WHERE section_id = $1 ORDER BY position, id",
            section_id,
        )
        .await
    }

    pub async fn insert_lesson(&self, lesson: &LessonRow) -> Result<(), Error> {
        sqlx::query(&format!(
            "INSERT INTO lessons ({LESSON_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, \
             (SELECT COALESCE(MAX(position), 0) + 1 FROM lessons WHERE section_id = $2))"
        ))
        .bind(&lesson.id)
        .bind(&lesson.section_id)
        .bind(&lesson.course_id)
        .bind(&lesson.title)
        .bind(&lesson.kind)
        .bind(i64::from(lesson.estimated_minutes))
        .bind(i64::from(lesson.required))
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    pub async fn lesson(&self, id: &str) -> Result<Option<LessonRow>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {LESSON_COLUMNS} FROM lessons WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.db.writer())
        .await?;
        Ok(row.as_ref().map(lesson_from_row).transpose()?)
    }

    pub async fn update_lesson(&self, id: &str, patch: &LessonPatch) -> Result<(), Error> {
        sqlx::query(
            "UPDATE lessons SET title = COALESCE($1, title), kind = COALESCE($2, kind), \
             estimated_minutes = COALESCE($3, estimated_minutes), required = COALESCE($4, required) WHERE id = $5",
        )
        .bind(patch.title.clone())
        .bind(patch.kind.clone())
        .bind(patch.estimated_minutes.map(i64::from))
        .bind(patch.required.map(i64::from))
        .bind(id)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    pub async fn delete_lesson(&self, id: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM lessons WHERE id = $1")
            .bind(id)
            .execute(self.db.writer())
            .await?;
        Ok(())
    }

    pub async fn lesson_count(&self, course_id: &str) -> Result<i64, Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM lessons WHERE course_id = $1")
            .bind(course_id)
            .fetch_one(self.db.writer())
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    pub async fn enrollment(
        &self,
        course_id: &str,
        learner_id: &str,
    ) -> Result<Option<EnrollmentRow>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE course_id = $1 AND learner_id = $2"
        ))
        .bind(course_id)
        .bind(learner_id)
        .fetch_optional(self.db.writer())
        .await?;
        Ok(row.as_ref().map(enrollment_from_row).transpose()?)
    }

    /// Creates the enrollment, or reopens a cancelled one; an existing live enrollment is
    /// returned as it is (enrolling twice is harmless).
    pub async fn enroll(
        &self,
        enrollment: &EnrollmentRow,
        event: &PendingEvent,
    ) -> Result<EnrollmentRow, Error> {
        let mut tx = self.db.writer().begin().await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO enrollments ({ENROLLMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, NULL, NULL) \
             ON CONFLICT (course_id, learner_id) DO UPDATE SET status = $4, enrolled_at = $5 \
             WHERE enrollments.status = 'cancelled'"
        ))
        .bind(&enrollment.id)
        .bind(&enrollment.course_id)
        .bind(&enrollment.learner_id)
        .bind(&enrollment.status)
        .bind(enrollment.enrolled_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Only a new (or reopened) enrollment is news.
        self.commit_with(tx, (inserted == 1).then_some(event).into_iter())
            .await?;
        self.enrollment(&enrollment.course_id, &enrollment.learner_id)
            .await?
            .ok_or(Error::Internal)
    }

    /// Which of `course_ids` the learner has completed.
    pub async fn completed_among(
        &self,
        learner_id: &str,
        course_ids: &[String],
    ) -> Result<Vec<String>, Error> {
        let mut done = Vec::new();
        for id in course_ids {
            let row = sqlx::query(
                "SELECT 1 AS done FROM enrollments WHERE learner_id = $1 AND course_id = $2 AND status = 'completed'",
            )
            .bind(learner_id)
            .bind(id)
            .fetch_optional(self.db.writer())
            .await?;
            if row.is_some() {
                done.push(id.clone());
            }
        }
        Ok(done)
    }

    /// The learner's enrollments, newest first, after the enrollment id `after`.
    pub async fn enrollments_of(
        &self,
        learner_id: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<EnrollmentRow>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE learner_id = $1 AND ($2 = '' OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(learner_id)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(self.db.reader())
        .await?;
        Ok(rows
            .iter()
            .map(enrollment_from_row)
            .collect::<Result<_, _>>()?)
    }

    pub async fn enrollment_counts(&self, course_id: &str) -> Result<EnrollmentCounts, Error> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM enrollments WHERE course_id = $1 GROUP BY status",
        )
        .bind(course_id)
        .fetch_all(self.db.reader())
        .await?;
        let mut counts = EnrollmentCounts::default();
        for row in rows {
            let status: String = row.try_get("status")?;
            let n: i64 = row.try_get("n")?;
            match status.as_str() {
                "active" => counts.active = n,
                "pending_payment" => counts.pending_payment = n,
                "completed" => counts.completed = n,
                "cancelled" => counts.cancelled = n,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// Raises the learner's progress in a lesson and completes the enrollment when every
    /// required lesson is done. `certificate_number` is used only if this call completes it.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_progress(
        &self,
        enrollment: &EnrollmentRow,
        lesson: &LessonRow,
        percent: i32,
        position_seconds: i32,
        now: i64,
        certificate_number: &str,
        course_title: &str,
        events: &ProgressEvents,
    ) -> Result<ProgressOutcome, Error> {
        let greatest = self.greatest();
        let mut tx = self.db.writer().begin().await?;
        sqlx::query(&format!(
            "INSERT INTO lesson_progress (learner_id, lesson_id, course_id, percent, position_seconds, completed_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, NULL, $6) \
             ON CONFLICT (learner_id, lesson_id) DO UPDATE SET \
             percent = {greatest}(lesson_progress.percent, excluded.percent), \
             position_seconds = {greatest}(lesson_progress.position_seconds, excluded.position_seconds), \
             updated_at = excluded.updated_at"
        ))
        .bind(&enrollment.learner_id)
        .bind(&lesson.id)
        .bind(&lesson.course_id)
        .bind(i64::from(percent))
        .bind(i64::from(position_seconds))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Completing is a conditional update on the (now locked) row: exactly one call
        // moves it from open to completed, and only that call reports it.
        let lesson_just_completed = sqlx::query(
            "UPDATE lesson_progress SET completed_at = $1 \
             WHERE learner_id = $2 AND lesson_id = $3 AND completed_at IS NULL AND percent >= 100",
        )
        .bind(now)
        .bind(&enrollment.learner_id)
        .bind(&lesson.id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let progress = sqlx::query(
            "SELECT lesson_id, percent, position_seconds, completed_at, updated_at FROM lesson_progress \
             WHERE learner_id = $1 AND lesson_id = $2",
        )
        .bind(&enrollment.learner_id)
        .bind(&lesson.id)
        .fetch_one(&mut *tx)
        .await?;
        let progress = progress_from_row(&progress)?;

        let remaining = sqlx::query(
            "SELECT COUNT(*) AS n FROM lessons l WHERE l.course_id = $1 AND l.required = 1 AND NOT EXISTS \
             (SELECT 1 FROM lesson_progress p WHERE p.lesson_id = l.id AND p.learner_id = $2 AND p.completed_at IS NOT NULL)",
        )
        .bind(&lesson.course_id)
        .bind(&enrollment.learner_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get::<i64, _>("n")?;
        let mut just_completed = false;
        if remaining == 0 {
            let won = sqlx::query(
                "UPDATE enrollments SET status = 'completed', completed_at = $1, certificate_number = $2 \
                 WHERE id = $3 AND status = 'active'",
            )
            .bind(now)
            .bind(certificate_number)
            .bind(&enrollment.id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if won {
                sqlx::query(
                    "INSERT INTO certificates (number, enrollment_id, course_id, course_title, learner_id, completed_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(certificate_number)
                .bind(&enrollment.id)
                .bind(&lesson.course_id)
                .bind(course_title)
                .bind(&enrollment.learner_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                just_completed = true;
            }
        }
        let enrollment = sqlx::query(&format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE id = $1"
        ))
        .bind(&enrollment.id)
        .fetch_one(&mut *tx)
        .await?;
        let enrollment = enrollment_from_row(&enrollment)?;
        // Every change is news for the learner's open tabs, with the progress it left.
        let progressed = (events.progressed)(&progress);
        let news = [
            Some(&progressed),
            lesson_just_completed.then_some(&events.lesson_completed),
            just_completed.then_some(&events.course_completed),
        ];
        self.commit_with(tx, news.into_iter().flatten()).await?;
        Ok(ProgressOutcome {
            progress,
            enrollment,
            just_completed,
            lesson_just_completed,
        })
    }

    pub async fn progress_in(
        &self,
        learner_id: &str,
        course_id: &str,
    ) -> Result<Vec<ProgressRow>, Error> {
        let rows = sqlx::query(
            "SELECT lesson_id, percent, position_seconds, completed_at, updated_at FROM lesson_progress \
             WHERE learner_id = $1 AND course_id = $2 ORDER BY lesson_id",
        )
        .bind(learner_id)
        .bind(course_id)
        .fetch_all(self.db.writer())
        .await?;
        Ok(rows
            .iter()
            .map(progress_from_row)
            .collect::<Result<_, _>>()?)
    }

    pub async fn certificate(&self, number: &str) -> Result<Option<CertificateRow>, Error> {
        let row = sqlx::query(
            "SELECT number, course_id, course_title, learner_id, completed_at FROM certificates WHERE number = $1",
        )
        .bind(number)
        .fetch_optional(self.db.reader())
        .await?;
        Ok(match row {
            Some(row) => Some(CertificateRow {
                number: row.try_get("number")?,
                course_id: row.try_get("course_id")?,
                course_title: row.try_get("course_title")?,
                learner_id: row.try_get("learner_id")?,
                completed_at: row.try_get("completed_at")?,
            }),
            None => None,
        })
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
