//! Sections and lessons of courses.

use duovarsity_common::Error;
use sqlx::Row;

use super::*;

impl CourseStore {
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

    /// Deletes a lesson and writes `event` in the same transaction.
    pub async fn delete_lesson(&self, id: &str, event: &PendingEvent) -> Result<(), Error> {
        let mut tx = self.db.writer().begin().await?;
        sqlx::query("DELETE FROM lessons WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.commit_with(tx, std::iter::once(event)).await
    }

    pub async fn lesson_count(&self, course_id: &str) -> Result<i64, Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM lessons WHERE course_id = $1")
            .bind(course_id)
            .fetch_one(self.db.writer())
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }
}
