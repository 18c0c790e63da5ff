//! The sections and lessons of a course: adding, editing, deleting and reordering them.
//! Who may edit is [`crate::rules`]'s decision; every change drops the cached outline.

use duovarsity_common::Error;
use duovarsity_common::auth::Claims;
use duovarsity_common::events::pending_event;
use duovarsity_proto::course::*;
use duovarsity_proto::events::LessonDeleted;

use duovarsity_common::validate::rules;

use crate::convert::*;
use crate::rules::*;
use crate::store::*;
use crate::{Courses, ensure_same_members};

impl Courses {
    /// Adds a section to a course (seed and CreateSection, after authorization).
    pub async fn add_section(&self, course_id: &str, title: &str) -> Result<Section, Error> {
        ensure_valid([check_title("title", title)])?;
        let section = SectionRow {
            id: uuid::Uuid::now_v7().to_string(),
            course_id: course_id.to_string(),
            title: title.trim().to_string(),
            position: 0,
        };
        self.store.insert_section(&section).await?;
        self.changed(course_id).await;
        let stored =
            self.store.section(&section.id).await?.ok_or_else(|| {
                Error::internal("course", &"the section just inserted is missing")
            })?;
        section_to_proto(&stored, &[])
    }

    /// Adds a lesson to a section (seed and CreateLesson, after authorization).
    pub async fn add_lesson(
        &self,
        section: &SectionRow,
        request: &CreateLessonRequest,
    ) -> Result<Lesson, Error> {
        let kind = kind_name(request.kind).ok_or_else(|| {
            Error::invalid(
                "kind",
                "must be LESSON_KIND_TEXT, LESSON_KIND_VIDEO or LESSON_KIND_QUIZ",
            )
        })?;
        // The request's field rules (the seed command calls this directly, not over gRPC),
        // then a title that is not blank once trimmed.
        let violations = rules::check("duovarsity.course.v1.CreateLessonRequest", request);
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        ensure_valid([check_title("title", &request.title)])?;
        let lesson = LessonRow {
            id: uuid::Uuid::now_v7().to_string(),
            section_id: section.id.clone(),
            course_id: section.course_id.clone(),
            title: request.title.trim().to_string(),
            kind: kind.to_string(),
            estimated_minutes: request.estimated_minutes,
            required: request.required,
            position: 0,
        };
        self.store.insert_lesson(&lesson).await?;
        self.changed(&section.course_id).await;
        let stored = self
            .store
            .lesson(&lesson.id)
            .await?
            .ok_or_else(|| Error::internal("course", &"the lesson just inserted is missing"))?;
        lesson_to_proto(&stored)
    }

    /// The section row (seed).
    pub async fn section_row(&self, id: &str) -> Result<SectionRow, Error> {
        self.store
            .section(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("section {id}")))
    }

    pub async fn create_section(
        &self,
        claims: &Claims,
        request: CreateSectionRequest,
    ) -> Result<Section, Error> {
        let course = self.editable_course(claims, &request.course_id).await?;
        self.add_section(&course.id, &request.title).await
    }

    pub async fn update_section(
        &self,
        claims: &Claims,
        request: UpdateSectionRequest,
    ) -> Result<Section, Error> {
        let (section, course) = self.editable_section(claims, &request.id).await?;
        ensure_valid([check_title("title", &request.title)])?;
        self.store
            .rename_section(&section.id, request.title.trim())
            .await?;
        self.changed(&course.id).await;
        let outline = self.outline(&course.id).await?;
        let updated = outline
            .sections
            .into_iter()
            .find(|s| s.id == section.id)
            .ok_or_else(|| {
                Error::internal("course", &"the renamed section is missing from its outline")
            })?;
        Ok(updated)
    }

    pub async fn delete_section(
        &self,
        claims: &Claims,
        request: DeleteSectionRequest,
    ) -> Result<DeleteSectionResponse, Error> {
        let (section, course) = self.editable_section(claims, &request.id).await?;
        self.store.delete_section(&section.id).await?;
        self.changed(&course.id).await;
        Ok(DeleteSectionResponse {})
    }

    pub async fn reorder_sections(
        &self,
        claims: &Claims,
        request: ReorderSectionsRequest,
    ) -> Result<CourseOutline, Error> {
        let course = self.editable_course(claims, &request.course_id).await?;
        ensure_same_members(
            "section_ids",
            &self.store.section_ids(&course.id).await?,
            &request.section_ids,
        )?;
        self.store
            .reorder(Reorderable::Sections, &request.section_ids)
            .await?;
        self.changed(&course.id).await;
        self.outline(&course.id).await
    }

    pub async fn create_lesson(
        &self,
        claims: &Claims,
        request: CreateLessonRequest,
    ) -> Result<Lesson, Error> {
        let (section, _) = self.editable_section(claims, &request.section_id).await?;
        self.add_lesson(&section, &request).await
    }

    pub async fn update_lesson(
        &self,
        claims: &Claims,
        request: UpdateLessonRequest,
    ) -> Result<Lesson, Error> {
        let (lesson, course) = self.editable_lesson(claims, &request.id).await?;
        let kind = match request.kind {
            Some(kind) => Some(
                kind_name(kind).ok_or_else(|| Error::invalid("kind", "is not a lesson kind"))?,
            ),
            None => None,
        };
        // Lengths and the minutes range are field rules of the request, checked before
        // this runs; a title must also not be blank once trimmed.
        ensure_valid([request
            .title
            .as_deref()
            .and_then(|t| check_title("title", t))])?;
        let patch = LessonPatch {
            title: request.title.map(|t| t.trim().to_string()),
            kind,
            estimated_minutes: request.estimated_minutes,
            required: request.required,
        };
        self.store.update_lesson(&lesson.id, &patch).await?;
        self.changed(&course.id).await;
        lesson_to_proto(
            &self
                .store
                .lesson(&lesson.id)
                .await?
                .ok_or_else(|| Error::internal("course", &"the updated lesson is missing"))?,
        )
    }

    pub async fn delete_lesson(
        &self,
        claims: &Claims,
        request: DeleteLessonRequest,
    ) -> Result<DeleteLessonResponse, Error> {
        let (lesson, course) = self.editable_lesson(claims, &request.id).await?;
        let deleted = LessonDeleted {
            lesson_id: lesson.id.clone(),
            course_id: course.id.clone(),
        };
        self.store
            .delete_lesson(&lesson.id, &pending_event(&lesson.id, &deleted))
            .await?;
        self.changed(&course.id).await;
        Ok(DeleteLessonResponse {})
    }

    pub async fn reorder_lessons(
        &self,
        claims: &Claims,
        request: ReorderLessonsRequest,
    ) -> Result<Section, Error> {
        let (section, course) = self.editable_section(claims, &request.section_id).await?;
        ensure_same_members(
            "lesson_ids",
            &self.store.lesson_ids(&section.id).await?,
            &request.lesson_ids,
        )?;
        self.store
            .reorder(Reorderable::Lessons, &request.lesson_ids)
            .await?;
        self.changed(&course.id).await;
        let outline = self.outline(&course.id).await?;
        outline
            .sections
            .into_iter()
            .find(|s| s.id == section.id)
            .ok_or_else(|| {
                Error::internal(
                    "course",
                    &"the reordered section is missing from its outline",
                )
            })
    }
}
