//! Rows to protobuf and back: the one place where stored names (`"beginner"`, `"active"`)
//! meet the wire enums, through prost's generated names ([`StoredName`]). A stored name that is not one of ours is corruption or a missing
//! migration, so it fails loudly (INTERNAL, logged once with the value) instead of turning
//! into a default.

use duovarsity_common::Error;
use duovarsity_common::enums::StoredName;
use duovarsity_common::time::timestamp_from_millis;
use duovarsity_proto::course::*;

use crate::store::{CourseRow, EnrollmentRow, LessonRow, ProgressRow, SectionRow};

/// The stored name of a wire level; `None` for unspecified or unknown numbers (callers
/// report them as a field violation).
pub fn level_name(level: i32) -> Option<String> {
    Level::stored_name_of(level)
}

/// The stored name of a wire lesson kind; `None` for unspecified or unknown numbers.
pub fn kind_name(kind: i32) -> Option<String> {
    LessonKind::stored_name_of(kind)
}

/// The stored name of a course status from an outline this service built.
pub fn status_name(status: i32) -> Result<String, Error> {
    CourseStatus::stored_name_of(status).ok_or_else(|| {
        Error::internal(
            "course: unknown status",
            &format!("course.status = {status}"),
        )
    })
}

pub fn course_to_proto(course: &CourseRow) -> Result<Course, Error> {
    Ok(Course {
        id: course.id.clone(),
        slug: course.slug.clone(),
        title: course.title.clone(),
        summary: course.summary.clone(),
        level: Level::from_stored("courses.level", &course.level)? as i32,
        tags: course.tags.clone(),
        language: course.language.clone(),
        price: course.price.as_ref().map(|(currency, amount_minor)| Money {
            currency: currency.clone(),
            amount_minor: *amount_minor,
        }),
        status: CourseStatus::from_stored("courses.status", &course.status)? as i32,
        instructor_id: course.instructor_id.clone(),
        prerequisite_ids: course.prerequisite_ids.clone(),
        created_at: Some(timestamp_from_millis(course.created_at)),
        updated_at: Some(timestamp_from_millis(course.updated_at)),
        published_at: course.published_at.map(timestamp_from_millis),
    })
}

pub fn section_to_proto(section: &SectionRow, lessons: &[LessonRow]) -> Result<Section, Error> {
    Ok(Section {
        id: section.id.clone(),
        course_id: section.course_id.clone(),
        title: section.title.clone(),
        position: section.position,
        lessons: lessons
            .iter()
            .map(lesson_to_proto)
            .collect::<Result<_, _>>()?,
    })
}

pub fn lesson_to_proto(lesson: &LessonRow) -> Result<Lesson, Error> {
    Ok(Lesson {
        id: lesson.id.clone(),
        section_id: lesson.section_id.clone(),
        course_id: lesson.course_id.clone(),
        title: lesson.title.clone(),
        kind: LessonKind::from_stored("lessons.kind", &lesson.kind)? as i32,
        estimated_minutes: lesson.estimated_minutes,
        required: lesson.required,
        position: lesson.position,
    })
}

pub fn enrollment_to_proto(enrollment: &EnrollmentRow) -> Result<Enrollment, Error> {
    Ok(Enrollment {
        id: enrollment.id.clone(),
        course_id: enrollment.course_id.clone(),
        learner_id: enrollment.learner_id.clone(),
        status: EnrollmentStatus::from_stored("enrollments.status", &enrollment.status)? as i32,
        enrolled_at: Some(timestamp_from_millis(enrollment.enrolled_at)),
        completed_at: enrollment.completed_at.map(timestamp_from_millis),
        certificate_number: enrollment.certificate_number.clone().unwrap_or_default(),
    })
}

pub fn progress_to_proto(progress: &ProgressRow) -> LessonProgress {
    LessonProgress {
        lesson_id: progress.lesson_id.clone(),
        percent: progress.percent,
        position_seconds: progress.position_seconds,
        completed: progress.completed_at.is_some(),
        updated_at: Some(timestamp_from_millis(progress.updated_at)),
    }
}

/// The `course.updated` event of a course as it is (or is about to be).
pub fn course_updated_event(course: &CourseRow) -> duovarsity_common::events::PendingEvent {
    let (price_currency, price_minor) = course.price.clone().unwrap_or_default();
    duovarsity_common::events::pending_event(
        &course.id,
        &duovarsity_proto::events::CourseUpdated {
            course_id: course.id.clone(),
            slug: course.slug.clone(),
            title: course.title.clone(),
            summary: course.summary.clone(),
            level: course.level.clone(),
            language: course.language.clone(),
            tags: course.tags.clone(),
            price_currency,
            price_minor,
            instructor_id: course.instructor_id.clone(),
            status: course.status.clone(),
            prerequisite_ids: course.prerequisite_ids.clone(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_stored_value_is_an_error_not_a_default() {
        assert!(Level::from_stored("courses.level", "expert").is_err());
        assert!(LessonKind::from_stored("lessons.kind", "podcast").is_err());
        assert!(CourseStatus::from_stored("courses.status", "deleted").is_err());
        assert!(EnrollmentStatus::from_stored("enrollments.status", "refunded").is_err());
        assert!(status_name(99).is_err());
        for level in ["beginner", "intermediate", "advanced"] {
            let parsed = Level::from_stored("courses.level", level).unwrap();
            assert_eq!(level_name(parsed as i32).as_deref(), Some(level));
        }
        for kind in ["text", "video", "quiz"] {
            let parsed = LessonKind::from_stored("lessons.kind", kind).unwrap();
            assert_eq!(kind_name(parsed as i32).as_deref(), Some(kind));
        }
        for status in ["draft", "published", "archived"] {
            let parsed = CourseStatus::from_stored("courses.status", status).unwrap();
            assert_eq!(status_name(parsed as i32).unwrap(), status);
        }
        for status in ["active", "pending_payment", "completed", "cancelled"] {
            EnrollmentStatus::from_stored("enrollments.status", status).unwrap();
        }
    }
}
