//! Enrollment: joining a course (prerequisites, archived courses, paid courses waiting for
//! payment), a learner's enrollments, instructor statistics, and the access answers the
//! content service asks for.

use bytes::Bytes;
use duovarsity_common::Error;
use duovarsity_common::auth::Claims;
use duovarsity_common::events::{pending_event, pending_event_at};
use duovarsity_common::time::now_millis;
use duovarsity_common::validate::page_token;
use duovarsity_proto::course::*;
use duovarsity_proto::events::{EnrollmentCompleted, EnrollmentCreated};

use crate::convert::*;
use crate::rules::*;
use crate::store::*;
use crate::{Courses, page_size};

impl Courses {
    pub async fn enroll(
        &self,
        claims: &Claims,
        request: EnrollRequest,
    ) -> Result<Enrollment, Error> {
        let learner = claims.sub.clone();
        let course = self
            .course_row(valid_id("course_id", &request.course_id)?)
            .await?;
        if course.status != "published" {
            // Drafts do not exist for outsiders; archived courses are closed.
            return Err(match course.status.as_str() {
                "archived" => Error::FailedPrecondition {
                    reason: "COURSE_ARCHIVED",
                    message: "this course is archived and takes no new enrollments".into(),
                },
                _ => Error::not_found(format!("course {}", course.id)),
            });
        }
        if let Some(existing) = self.store.enrollment(&course.id, &learner).await?
            && existing.status != "cancelled"
        {
            return enrollment_to_proto(&existing);
        }
        let done = self
            .store
            .completed_among(&learner, &course.prerequisite_ids)
            .await?;
        if let Some(missing) = course.prerequisite_ids.iter().find(|id| !done.contains(id)) {
            let title = self
                .store
                .course(missing)
                .await?
                .map(|c| c.title)
                .unwrap_or_default();
            return Err(Error::FailedPrecondition {
                reason: "PREREQUISITE_MISSING",
                message: format!("complete the prerequisite course {missing} ({title}) first"),
            });
        }
        let enrollment = EnrollmentRow {
            id: uuid::Uuid::now_v7().to_string(),
            course_id: course.id.clone(),
            learner_id: learner,
            status: if course.price.is_some() {
                "pending_payment"
            } else {
                "active"
            }
            .into(),
            enrolled_at: now_millis(),
            completed_at: None,
            certificate_number: None,
        };
        let created = pending_event(
            &enrollment.id,
            &EnrollmentCreated {
                enrollment_id: enrollment.id.clone(),
                course_id: enrollment.course_id.clone(),
                learner_id: enrollment.learner_id.clone(),
                status: enrollment.status.clone(),
            },
        );
        enrollment_to_proto(&self.store.enroll(&enrollment, &created).await?)
    }

    /// Seeds an enrollment that began at `at` (and, with `completed`, was completed a minute
    /// later), with the events a real one would have published, at those times. No
    /// prerequisite, payment or progress is checked or made: `duovarsity seed` only.
    pub async fn seed_enrollment(
        &self,
        learner_id: &str,
        course_id: &str,
        completed: bool,
        at: i64,
    ) -> Result<bool, Error> {
        let completed_at = completed.then_some(at + 60_000);
        let certificate_number = completed.then(Courses::certificate_number).transpose()?;
        let enrollment = EnrollmentRow {
            id: uuid::Uuid::now_v7().to_string(),
            course_id: course_id.to_string(),
            learner_id: learner_id.to_string(),
            status: if completed { "completed" } else { "active" }.into(),
            enrolled_at: at,
            completed_at,
            certificate_number: certificate_number.clone(),
        };
        let mut events = vec![pending_event_at(
            &enrollment.id,
            &EnrollmentCreated {
                enrollment_id: enrollment.id.clone(),
                course_id: course_id.to_string(),
                learner_id: learner_id.to_string(),
                status: "active".into(),
            },
            at,
        )];
        if let (Some(done_at), Some(number)) = (completed_at, certificate_number) {
            events.push(pending_event_at(
                &enrollment.id,
                &EnrollmentCompleted {
                    enrollment_id: enrollment.id.clone(),
                    course_id: course_id.to_string(),
                    learner_id: learner_id.to_string(),
                    certificate_number: number,
                },
                done_at,
            ));
        }
        self.store.seed_enrollment(&enrollment, &events).await
    }

    pub async fn get_my_enrollment(
        &self,
        claims: &Claims,
        request: GetMyEnrollmentRequest,
    ) -> Result<Enrollment, Error> {
        let course_id = valid_id("course_id", &request.course_id)?;
        let enrollment = self
            .store
            .enrollment(course_id, &claims.sub)
            .await?
            .ok_or_else(|| Error::not_found(format!("enrollment in course {course_id}")))?;
        enrollment_to_proto(&enrollment)
    }

    pub async fn list_my_enrollments(
        &self,
        claims: &Claims,
        request: ListMyEnrollmentsRequest,
    ) -> Result<ListMyEnrollmentsResponse, Error> {
        let learner = claims.sub.clone();
        let limit = page_size(request.page_size);
        let after = page_token::cursor(&request.page_token, "ListMyEnrollments", |id| {
            Some(id.to_string())
        })?;
        let rows = self
            .store
            .enrollments_of(&learner, after.as_deref(), limit + 1)
            .await?;
        let (rows, next_page_token) = page_token::page(rows, limit, |e| e.id.clone());
        Ok(ListMyEnrollmentsResponse {
            enrollments: rows
                .iter()
                .map(enrollment_to_proto)
                .collect::<Result<_, _>>()?,
            next_page_token,
        })
    }

    pub async fn get_course_stats(
        &self,
        claims: &Claims,
        request: GetCourseStatsRequest,
    ) -> Result<CourseStats, Error> {
        let course = self.editable_course(claims, &request.course_id).await?;
        let counts = self.store.enrollment_counts(&course.id).await?;
        let started = counts.active + counts.completed;
        Ok(CourseStats {
            course_id: course.id,
            active: counts.active,
            pending_payment: counts.pending_payment,
            completed: counts.completed,
            cancelled: counts.cancelled,
            completion_rate: if started == 0 {
                0.0
            } else {
                counts.completed as f64 / started as f64
            },
        })
    }

    pub async fn check_lesson_access(
        &self,
        claims: Option<&Claims>,
        request: CheckLessonAccessRequest,
    ) -> Result<LessonAccess, Error> {
        let lesson_id = request.lesson_id;
        valid_id("lesson_id", &lesson_id)?;
        // Every content read asks this, so it runs from caches: the lesson's course (fixed
        // for the lesson's life) and the course outline (invalidated by every edit).
        let store = self.store.clone();
        let id = lesson_id.clone();
        let course_id = self
            .lesson_courses
            .get_or_load(&lesson_id, || async move {
                let lesson = store
                    .lesson(&id)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("lesson {id}")))?;
                Ok(Bytes::from(lesson.course_id))
            })
            .await?;
        let course_id = String::from_utf8(course_id.to_vec())
            .map_err(|e| Error::internal("cached lesson course", &e))?;
        let outline = self.outline(&course_id).await?;
        let lesson_title = outline
            .sections
            .iter()
            .flat_map(|s| &s.lessons)
            .find(|l| l.id == lesson_id)
            .map(|l| l.title.clone());
        let course = outline
            .course
            .ok_or_else(|| Error::internal("course", &"a cached outline has no course"))?;
        let Some(lesson_title) = lesson_title else {
            return Err(Error::not_found(format!("lesson {lesson_id}")));
        };
        let status = status_name(course.status)?;
        let paid = course.price.is_some();
        let needs_enrollment = status == "archived" || (paid && status == "published");
        let enrolled = needs_enrollment && self.is_enrolled(claims, &course.id).await?;
        let can_edit = claims
            .as_ref()
            .is_some_and(|c| crate::rules::can_edit(c, &course.instructor_id));
        Ok(LessonAccess {
            course_id: course.id.clone(),
            can_read: can_read_lessons(claims, &status, &course.instructor_id, paid, enrolled),
            can_edit,
            public: status == "published" && !paid,
            lesson_title,
        })
    }
}
