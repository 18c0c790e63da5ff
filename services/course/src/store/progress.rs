//! Lesson progress, course completion and certificates.

use duovarsity_common::Error;
use sqlx::Row;

use super::*;

impl CourseStore {
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
