//! The consumer's handler: catalog and enrollment events become rows of the discovery
//! database, each guarded by the event's time so that redelivery or a late event never
//! undoes a newer change. Replicas' indexes follow those rows ([`crate::follow`]); once a
//! change is committed, this replica's follower is woken so it need not wait for its next
//! poll.
//!
//! - `course.updated`: the course entry as it is (published or not);
//! - `course.archived`: the course leaves search;
//! - `lesson.published`: the lesson's title and text; `lesson.deleted`: a tombstone;
//! - `enrollment.created` / `activated` / `completed` / `revoked`: who owns the course
//!   (the text of a paid lesson is searchable by its owners only), and the item-to-item
//!   model of courses taken together;
//! - `progress.lesson_progressed` / `lesson_completed`: when a learner last learned in a
//!   course, and the lessons they finished ("continue").

use std::sync::Arc;

use async_trait::async_trait;
use duovarsity_common::Error;
use duovarsity_common::events::Event;
use duovarsity_common::events::catalog::decode;
use duovarsity_common::events::consumer::batch::BatchHandler;
use duovarsity_common::time::now_millis;
use duovarsity_proto::events::{
    CourseArchived, CourseUpdated, EnrollmentActivated, EnrollmentCompleted, EnrollmentCreated,
    EnrollmentRevoked, Envelope, LessonCompleted, LessonDeleted, LessonProgressed, LessonPublished,
};
use sqlx::{Any, Transaction};
use tokio::sync::Notify;

use crate::catalog::{CourseEntry, LessonEntry};
use crate::store;

/// When the event happened at its source, in milliseconds.
fn moment(envelope: &Envelope) -> i64 {
    envelope.occurred_at.as_ref().map_or_else(now_millis, |t| {
        t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
    })
}

/// Applies one event to the discovery database.
pub struct Ingest {
    /// Wakes this replica's follower after a commit.
    pub changed: Arc<Notify>,
}

impl From<CourseUpdated> for CourseEntry {
    fn from(course: CourseUpdated) -> Self {
        CourseEntry {
            id: course.course_id,
            slug: course.slug,
            title: course.title,
            summary: course.summary,
            level: course.level,
            language: course.language,
            tags: course.tags,
            price_currency: course.price_currency,
            price_minor: course.price_minor,
            instructor_id: course.instructor_id,
            status: course.status,
            prerequisite_ids: course.prerequisite_ids,
        }
    }
}

#[async_trait]
impl BatchHandler for Ingest {
    /// Whether the batch changed a catalog row (the index follows those).
    type Applied = bool;

    async fn handle_batch(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelopes: &[Envelope],
    ) -> Result<bool, Error> {
        for envelope in envelopes {
            apply(tx, envelope).await?;
        }
        Ok(envelopes.iter().any(is_catalog))
    }

    async fn committed(&self, catalog: bool) {
        if catalog {
            self.changed.notify_one();
        }
    }
}

fn is_catalog(envelope: &Envelope) -> bool {
    matches!(
        envelope.r#type.as_str(),
        CourseUpdated::TYPE | CourseArchived::TYPE | LessonPublished::TYPE | LessonDeleted::TYPE
    )
}

/// Applies one event, in the batch's transaction.
async fn apply(tx: &mut Transaction<'_, Any>, envelope: &Envelope) -> Result<(), Error> {
    let at = moment(envelope);
    let now = now_millis();
    match envelope.r#type.as_str() {
        CourseUpdated::TYPE => {
            let course = CourseEntry::from(decode::<CourseUpdated>(envelope)?);
            store::put_course(tx, &course, at, now).await
        }
        CourseArchived::TYPE => {
            let archived = decode::<CourseArchived>(envelope)?;
            store::set_course_status(tx, &archived.course_id, "archived", at, now).await
        }
        LessonPublished::TYPE => {
            let published = decode::<LessonPublished>(envelope)?;
            let lesson = LessonEntry {
                id: published.lesson_id,
                course_id: published.course_id,
                title: published.title,
                markdown: published.markdown,
                version: i64::from(published.version),
                deleted: false,
            };
            store::put_lesson(tx, &lesson, at, now).await
        }
        LessonDeleted::TYPE => {
            let deleted = decode::<LessonDeleted>(envelope)?;
            let tombstone = LessonEntry {
                id: deleted.lesson_id,
                course_id: deleted.course_id,
                title: String::new(),
                markdown: String::new(),
                version: 0,
                deleted: true,
            };
            store::put_lesson(tx, &tombstone, at, now).await
        }
        EnrollmentCreated::TYPE => {
            let e = decode::<EnrollmentCreated>(envelope)?;
            store::put_enrollment(tx, &e.learner_id, &e.course_id, &e.status, at).await
        }
        EnrollmentActivated::TYPE => {
            let e = decode::<EnrollmentActivated>(envelope)?;
            store::put_enrollment(tx, &e.learner_id, &e.course_id, "active", at).await
        }
        EnrollmentCompleted::TYPE => {
            let e = decode::<EnrollmentCompleted>(envelope)?;
            store::put_enrollment(tx, &e.learner_id, &e.course_id, "completed", at).await
        }
        EnrollmentRevoked::TYPE => {
            let e = decode::<EnrollmentRevoked>(envelope)?;
            store::put_enrollment(tx, &e.learner_id, &e.course_id, "revoked", at).await
        }
        LessonProgressed::TYPE => {
            let p = decode::<LessonProgressed>(envelope)?;
            store::learned(tx, &p.learner_id, &p.course_id, None, at).await
        }
        LessonCompleted::TYPE => {
            let c = decode::<LessonCompleted>(envelope)?;
            store::learned(tx, &c.learner_id, &c.course_id, Some(&c.lesson_id), at).await
        }
        // Other events of these topics (course.published, ...) say nothing new here.
        _ => Ok(()),
    }
}
