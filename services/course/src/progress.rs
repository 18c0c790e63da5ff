//! Progress: lesson progress that only moves forward, course completion with one winner,
//! and certificates. The events a change may cause are built here and written by the store
//! in the change's transaction.

use duovarsity_common::Error;
use duovarsity_common::auth::Claims;
use duovarsity_common::events::pending_event;
use duovarsity_common::time::{now_millis, timestamp_from_millis};
use duovarsity_proto::course::*;
use duovarsity_proto::events::{EnrollmentCompleted, LessonCompleted, LessonProgressed};
use ring::rand::{SecureRandom, SystemRandom};

use crate::Courses;
use crate::convert::*;
use crate::rules::*;
use crate::store::*;

impl Courses {
    pub(crate) fn certificate_number() -> Result<String, Error> {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let mut bytes = [0u8; 12];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Error::internal("certificate number", &"randomness failed"))?;
        let symbols: String = bytes
            .iter()
            .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
            .collect();
        Ok(format!(
            "DV-{}-{}-{}",
            &symbols[0..4],
            &symbols[4..8],
            &symbols[8..12]
        ))
    }

    pub async fn record_progress(
        &self,
        claims: &Claims,
        request: RecordProgressRequest,
    ) -> Result<RecordProgressResponse, Error> {
        // Percent (0 to 100) and position (not negative) are field rules of the request,
        // checked before this runs.
        let learner = claims.sub.clone();
        let lesson = self
            .store
            .lesson(valid_id("lesson_id", &request.lesson_id)?)
            .await?
            .ok_or_else(|| Error::not_found(format!("lesson {}", request.lesson_id)))?;
        let enrollment = self
            .store
            .enrollment(&lesson.course_id, &learner)
            .await?
            .ok_or_else(|| Error::FailedPrecondition {
                reason: "NOT_ENROLLED",
                message: "enroll in the course before recording progress".into(),
            })?;
        if !matches!(enrollment.status.as_str(), "active" | "completed") {
            return Err(Error::FailedPrecondition {
                reason: "ENROLLMENT_NOT_ACTIVE",
                message: format!(
                    "the enrollment is {}; progress needs an active enrollment",
                    enrollment.status
                ),
            });
        }
        let course = self.course_row(&lesson.course_id).await?;
        let certificate_number = Courses::certificate_number()?;
        let progressed = LessonProgressed {
            learner_id: enrollment.learner_id.clone(),
            course_id: lesson.course_id.clone(),
            lesson_id: lesson.id.clone(),
            lesson_title: lesson.title.clone(),
            ..LessonProgressed::default()
        };
        let events = ProgressEvents {
            progressed: Box::new(move |progress| {
                pending_event(
                    &progressed.learner_id,
                    &LessonProgressed {
                        percent: progress.percent,
                        position_seconds: progress.position_seconds,
                        completed: progress.completed_at.is_some(),
                        ..progressed.clone()
                    },
                )
            }),
            lesson_completed: pending_event(
                &enrollment.learner_id,
                &LessonCompleted {
                    learner_id: enrollment.learner_id.clone(),
                    course_id: course.id.clone(),
                    lesson_id: lesson.id.clone(),
                    lesson_title: lesson.title.clone(),
                },
            ),
            course_completed: pending_event(
                &enrollment.id,
                &EnrollmentCompleted {
                    enrollment_id: enrollment.id.clone(),
                    course_id: course.id.clone(),
                    learner_id: enrollment.learner_id.clone(),
                    certificate_number: certificate_number.clone(),
                },
            ),
        };
        let outcome = self
            .store
            .record_progress(
                &enrollment,
                &lesson,
                request.percent,
                request.position_seconds,
                now_millis(),
                &certificate_number,
                &course.title,
                &events,
            )
            .await?;
        if outcome.just_completed {
            tracing::info!(course_id = %course.id, learner_id = %enrollment.learner_id, "course completed");
        }
        Ok(RecordProgressResponse {
            progress: Some(progress_to_proto(&outcome.progress)),
            enrollment: Some(enrollment_to_proto(&outcome.enrollment)?),
        })
    }

    pub async fn get_course_progress(
        &self,
        claims: &Claims,
        request: GetCourseProgressRequest,
    ) -> Result<CourseProgress, Error> {
        let learner = claims.sub.clone();
        let course_id = request.course_id;
        let enrollment = self
            .store
            .enrollment(valid_id("course_id", &course_id)?, &learner)
            .await?
            .ok_or_else(|| Error::not_found(format!("enrollment in course {course_id}")))?;
        let outline = self.outline(&course_id).await?;
        let required: Vec<&str> = outline
            .sections
            .iter()
            .flat_map(|s| &s.lessons)
            .filter(|l| l.required)
            .map(|l| l.id.as_str())
            .collect();
        let lessons: Vec<LessonProgress> = self
            .store
            .progress_in(&learner, &course_id)
            .await?
            .iter()
            .map(progress_to_proto)
            .collect();
        let completed_required = lessons
            .iter()
            .filter(|p| p.completed && required.contains(&p.lesson_id.as_str()))
            .count();
        Ok(CourseProgress {
            enrollment: Some(enrollment_to_proto(&enrollment)?),
            lessons,
            required_lessons: required.len() as i32,
            completed_required_lessons: completed_required as i32,
        })
    }

    pub async fn get_certificate(
        &self,
        request: GetCertificateRequest,
    ) -> Result<Certificate, Error> {
        let number = request.number.trim().to_uppercase();
        let certificate = self
            .store
            .certificate(&number)
            .await?
            .ok_or_else(|| Error::not_found(format!("certificate {number}")))?;
        Ok(Certificate {
            number: certificate.number,
            course_id: certificate.course_id,
            course_title: certificate.course_title,
            learner_id: certificate.learner_id,
            completed_at: Some(timestamp_from_millis(certificate.completed_at)),
        })
    }
}
