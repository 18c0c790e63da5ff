//! Enrollments and their counts.

use duovarsity_common::Error;
use duovarsity_common::events::PendingEvent;
use duovarsity_common::time::now_millis;
use sqlx::Row;

use super::*;

impl CourseStore {
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
            .ok_or_else(|| Error::internal("course", &"the enrollment just written is missing"))
    }

    /// Writes a seeded enrollment as it is (any status) with its events, unless the learner
    /// has one in the course already; whether it was written.
    pub async fn seed_enrollment(
        &self,
        enrollment: &EnrollmentRow,
        events: &[PendingEvent],
    ) -> Result<bool, Error> {
        let mut tx = self.db.writer().begin().await?;
        let inserted = sqlx::query(&format!(
            "INSERT INTO enrollments ({ENROLLMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (course_id, learner_id) DO NOTHING"
        ))
        .bind(&enrollment.id)
        .bind(&enrollment.course_id)
        .bind(&enrollment.learner_id)
        .bind(&enrollment.status)
        .bind(enrollment.enrolled_at)
        .bind(enrollment.completed_at)
        .bind(&enrollment.certificate_number)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        self.commit_with(tx, events.iter().filter(|_| inserted))
            .await?;
        Ok(inserted)
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

    /// In the consumer's transaction: moves the learner's enrollment in a course to `to`
    /// if its status is one of `from` (creating it as `to` when `create` and there is
    /// none), enqueues `event` for the enrollment after the move, and returns it. None:
    /// nothing to move.
    pub async fn move_enrollment(
        &self,
        tx: &mut Transaction<'_, Any>,
        (course_id, learner_id): (&str, &str),
        from: &[&str],
        to: &str,
        create: bool,
        event: impl FnOnce(&EnrollmentRow) -> PendingEvent,
    ) -> Result<Option<EnrollmentRow>, Error> {
        let select = format!(
            "SELECT {ENROLLMENT_COLUMNS} FROM enrollments WHERE course_id = $1 AND learner_id = $2"
        );
        let current = sqlx::query(&select)
            .bind(course_id)
            .bind(learner_id)
            .fetch_optional(&mut **tx)
            .await?
            .as_ref()
            .map(enrollment_from_row)
            .transpose()?;
        match current {
            Some(row) if from.contains(&row.status.as_str()) => {
                sqlx::query("UPDATE enrollments SET status = $1 WHERE id = $2 AND status = $3")
                    .bind(to)
                    .bind(&row.id)
                    .bind(&row.status)
                    .execute(&mut **tx)
                    .await?;
            }
            None if create => {
                sqlx::query(&format!(
                    "INSERT INTO enrollments ({ENROLLMENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, NULL, NULL)"
                ))
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(course_id)
                .bind(learner_id)
                .bind(to)
                .bind(now_millis())
                .execute(&mut **tx)
                .await?;
            }
            _ => return Ok(None),
        }
        let moved = sqlx::query(&select)
            .bind(course_id)
            .bind(learner_id)
            .fetch_one(&mut **tx)
            .await?;
        let moved = enrollment_from_row(&moved)?;
        self.outbox.enqueue_event(tx, &event(&moved)).await?;
        Ok(Some(moved))
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
                other => {
                    return Err(Error::internal(
                        "course store: unknown stored value",
                        &format!("enrollments.status = {other:?}"),
                    ));
                }
            }
        }
        Ok(counts)
    }
}
