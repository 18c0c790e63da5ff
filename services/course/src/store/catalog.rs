//! Courses, their tags and prerequisites (sections and lessons: `sections.rs`).

use duovarsity_common::Error;
use duovarsity_common::events::PendingEvent;
use sqlx::Row;

use super::*;

impl CourseStore {
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

    /// Applies `patch` and writes `event` (the course after it) in the same transaction.
    pub async fn update_course(
        &self,
        id: &str,
        patch: &CoursePatch,
        now: i64,
        event: &PendingEvent,
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
        self.commit_with(tx, std::iter::once(event)).await
    }

    /// Changes the status, writing `events` in the same transaction.
    pub async fn set_status(
        &self,
        id: &str,
        status: &str,
        now: i64,
        events: &[PendingEvent],
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
        self.commit_with(tx, events.iter()).await
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

    pub(super) async fn column(&self, sql: &str, id: &str) -> Result<Vec<String>, Error> {
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
        pool: &duovarsity_common::db::Pool,
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

    /// Replaces a course's prerequisites, writing `event` in the same transaction.
    pub async fn set_prerequisites(
        &self,
        course_id: &str,
        ids: &[String],
        event: &PendingEvent,
    ) -> Result<(), Error> {
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
        self.commit_with(tx, std::iter::once(event)).await
    }
}
