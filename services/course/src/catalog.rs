//! The catalog: courses, prerequisites and publication (their sections and lessons are in
//! `sections`). The
//! rules of who may see and edit what are in [`crate::rules`]; this module decides what a
//! change is, checks it, and asks the store to apply it.

use duovarsity_common::Error;
use duovarsity_common::auth::Claims;
use duovarsity_common::events::pending_event;
use duovarsity_common::time::now_millis;
use duovarsity_common::validate::page_token;
use duovarsity_proto::course::*;
use duovarsity_proto::events::{CourseArchived, CoursePublished};

use crate::convert::*;
use crate::rules::*;
use crate::store::*;
use crate::{Courses, dedup, page_size};

impl Courses {
    /// Creates a course for `instructor_id` (the seed command and CreateCourse).
    pub async fn create_course(
        &self,
        instructor_id: &str,
        input: &Course,
    ) -> Result<Course, Error> {
        let price = input
            .price
            .as_ref()
            .map(|p| (p.currency.clone(), p.amount_minor));
        ensure_valid([
            check_slug(&input.slug),
            check_title("course.title", &input.title),
            check_summary(&input.summary),
            level_name(input.level).is_none().then(|| {
                duovarsity_common::FieldViolation::new(
                    "course.level",
                    "must be LEVEL_BEGINNER, LEVEL_INTERMEDIATE or LEVEL_ADVANCED",
                )
            }),
            check_language(&input.language),
            check_tags(&input.tags),
            price.as_ref().and_then(|(c, a)| check_price(c, *a)),
        ])?;
        let now = now_millis();
        let course = CourseRow {
            id: uuid::Uuid::now_v7().to_string(),
            slug: input.slug.clone(),
            title: input.title.trim().to_string(),
            summary: input.summary.trim().to_string(),
            level: level_name(input.level).unwrap_or_else(|| "beginner".into()),
            language: input.language.clone(),
            price,
            status: "draft".into(),
            instructor_id: instructor_id.to_string(),
            created_at: now,
            updated_at: now,
            published_at: None,
            tags: dedup(&input.tags),
            prerequisite_ids: Vec::new(),
        };
        self.store.insert_course(&course).await?;
        course_to_proto(&course)
    }

    /// The stored course (seed, after creating it).
    pub async fn course_by_id(&self, id: &str) -> Result<CourseRow, Error> {
        self.course_row(id).await
    }

    /// Publishes after checking the course has a lesson.
    pub async fn publish(&self, course: &CourseRow) -> Result<Course, Error> {
        if course.status == "archived" {
            return Err(Error::FailedPrecondition {
                reason: "COURSE_ARCHIVED",
                message: "an archived course cannot be published again".into(),
            });
        }
        if self.store.lesson_count(&course.id).await? == 0 {
            return Err(Error::FailedPrecondition {
                reason: "COURSE_EMPTY",
                message: "a course needs at least one lesson before it is published".into(),
            });
        }
        let published = pending_event(
            &course.id,
            &CoursePublished {
                course_id: course.id.clone(),
                title: course.title.clone(),
                instructor_id: course.instructor_id.clone(),
            },
        );
        // Publishing an already published course again is not news.
        let events = if course.status == "published" {
            Vec::new()
        } else {
            let listed = CourseRow {
                status: "published".into(),
                ..course.clone()
            };
            vec![published, course_updated_event(&listed)]
        };
        self.store
            .set_status(&course.id, "published", now_millis(), &events)
            .await?;
        self.changed(&course.id).await;
        course_to_proto(&self.course_row(&course.id).await?)
    }

    /// Replaces prerequisites after validating them (seed and SetPrerequisites).
    pub async fn replace_prerequisites(
        &self,
        course: &CourseRow,
        ids: &[String],
    ) -> Result<(), Error> {
        let ids = dedup(ids);
        for id in &ids {
            valid_id("prerequisite_ids", id)?;
            if *id == course.id {
                return Err(Error::invalid(
                    "prerequisite_ids",
                    "a course cannot require itself",
                ));
            }
            if self.store.course(id).await?.is_none() {
                return Err(Error::invalid(
                    "prerequisite_ids",
                    format!("course {id} does not exist"),
                ));
            }
        }
        let updated = CourseRow {
            prerequisite_ids: ids.clone(),
            ..course.clone()
        };
        self.store
            .set_prerequisites(&course.id, &ids, &course_updated_event(&updated))
            .await?;
        self.changed(&course.id).await;
        Ok(())
    }

    pub async fn update_course(
        &self,
        claims: &Claims,
        request: UpdateCourseRequest,
    ) -> Result<Course, Error> {
        let input = request
            .course
            .ok_or_else(|| Error::invalid("course", "is required"))?;
        let course = self.editable_course(claims, &input.id).await?;
        let paths: Vec<String> = match request.update_mask {
            Some(mask) if !mask.paths.is_empty() => mask.paths,
            _ => {
                let mut populated = Vec::new();
                for (name, set) in [
                    ("slug", !input.slug.is_empty()),
                    ("title", !input.title.is_empty()),
                    ("summary", !input.summary.is_empty()),
                    ("level", input.level != 0),
                    ("language", !input.language.is_empty()),
                    ("tags", !input.tags.is_empty()),
                    ("price", input.price.is_some()),
                ] {
                    if set {
                        populated.push(name.to_string());
                    }
                }
                populated
            }
        };
        let mut patch = CoursePatch::default();
        let mut violations = Vec::new();
        for path in &paths {
            match path.as_str() {
                "slug" => {
                    violations.push(check_slug(&input.slug));
                    patch.slug = Some(input.slug.clone());
                }
                "title" => {
                    violations.push(check_title("course.title", &input.title));
                    patch.title = Some(input.title.trim().to_string());
                }
                "summary" => {
                    violations.push(check_summary(&input.summary));
                    patch.summary = Some(input.summary.trim().to_string());
                }
                "level" => match level_name(input.level) {
                    Some(level) => patch.level = Some(level),
                    None => violations.push(Some(duovarsity_common::FieldViolation::new(
                        "course.level",
                        "must be a level",
                    ))),
                },
                "language" => {
                    violations.push(check_language(&input.language));
                    patch.language = Some(input.language.clone());
                }
                "tags" => {
                    violations.push(check_tags(&input.tags));
                    patch.tags = Some(dedup(&input.tags));
                }
                "price" => {
                    let price = input
                        .price
                        .as_ref()
                        .map(|p| (p.currency.clone(), p.amount_minor));
                    violations.push(price.as_ref().and_then(|(c, a)| check_price(c, *a)));
                    patch.price = Some(price);
                }
                other => violations.push(Some(duovarsity_common::FieldViolation::new(
                    "update_mask",
                    format!("{other:?} cannot be updated"),
                ))),
            }
        }
        ensure_valid(violations)?;
        let updated = CourseRow {
            slug: patch.slug.clone().unwrap_or_else(|| course.slug.clone()),
            title: patch.title.clone().unwrap_or_else(|| course.title.clone()),
            summary: patch
                .summary
                .clone()
                .unwrap_or_else(|| course.summary.clone()),
            level: patch.level.clone().unwrap_or_else(|| course.level.clone()),
            language: patch
                .language
                .clone()
                .unwrap_or_else(|| course.language.clone()),
            tags: patch.tags.clone().unwrap_or_else(|| course.tags.clone()),
            price: patch.price.clone().unwrap_or_else(|| course.price.clone()),
            ..course.clone()
        };
        self.store
            .update_course(
                &course.id,
                &patch,
                now_millis(),
                &course_updated_event(&updated),
            )
            .await?;
        if patch.slug.is_some() {
            self.slugs.invalidate(&course.slug).await;
        }
        self.changed(&course.id).await;
        course_to_proto(&self.course_row(&course.id).await?)
    }

    pub async fn publish_course(
        &self,
        claims: &Claims,
        request: PublishCourseRequest,
    ) -> Result<Course, Error> {
        let course = self.editable_course(claims, &request.id).await?;
        self.publish(&course).await
    }

    pub async fn archive_course(
        &self,
        claims: &Claims,
        request: ArchiveCourseRequest,
    ) -> Result<Course, Error> {
        let course = self.editable_course(claims, &request.id).await?;
        // Archiving an archived course again is not news.
        let events = if course.status == "archived" {
            Vec::new()
        } else {
            let archived = CourseArchived {
                course_id: course.id.clone(),
            };
            vec![pending_event(&course.id, &archived)]
        };
        self.store
            .set_status(&course.id, "archived", now_millis(), &events)
            .await?;
        self.changed(&course.id).await;
        course_to_proto(&self.course_row(&course.id).await?)
    }

    pub async fn get_course(
        &self,
        claims: Option<&Claims>,
        request: GetCourseRequest,
    ) -> Result<CourseOutline, Error> {
        let key = request.id;
        // Slugs resolve to ids once; the cache is keyed by id so invalidation has one key.
        let id = if uuid::Uuid::parse_str(&key).is_ok() {
            key.clone()
        } else {
            self.course_id_for_slug(&key).await?
        };
        let outline = self.outline(&id).await?;
        let course = outline
            .course
            .as_ref()
            .ok_or_else(|| Error::internal("course", &"a cached outline has no course"))?;
        let status = status_name(course.status)?;
        let enrolled = status == "archived" && self.is_enrolled(claims, &course.id).await?;
        if !can_view(claims, &status, &course.instructor_id, enrolled) {
            return Err(Error::not_found(format!("course {key}")));
        }
        Ok(outline)
    }

    pub async fn list_courses(
        &self,
        request: ListCoursesRequest,
    ) -> Result<ListCoursesResponse, Error> {
        let limit = page_size(request.page_size);
        let cursor = page_token::cursor(&request.page_token, "ListCourses", |text| {
            let (at, id) = text.split_once(':')?;
            Some((at.parse::<i64>().ok()?, id.to_string()))
        })?;
        let filter = CatalogFilter {
            tag: request.tag,
            level: if request.level == 0 {
                String::new()
            } else {
                level_name(request.level)
                    .ok_or_else(|| Error::invalid("level", "is not a level"))?
            },
            language: request.language,
            free: match PriceFilter::try_from(request.price) {
                Ok(PriceFilter::Free) => Some(true),
                Ok(PriceFilter::Paid) => Some(false),
                _ => None,
            },
            instructor_id: request.instructor_id,
            query: request.query.chars().take(200).collect(),
        };
        let rows = self
            .store
            .list_published(&filter, cursor.as_ref(), limit + 1)
            .await?;
        let (rows, next_page_token) = page_token::page(rows, limit, |c| {
            format!("{}:{}", c.published_at.unwrap_or_default(), c.id)
        });
        Ok(ListCoursesResponse {
            courses: rows.iter().map(course_to_proto).collect::<Result<_, _>>()?,
            next_page_token,
        })
    }

    pub async fn set_prerequisites(
        &self,
        claims: &Claims,
        request: SetPrerequisitesRequest,
    ) -> Result<CourseOutline, Error> {
        let course = self.editable_course(claims, &request.course_id).await?;
        self.replace_prerequisites(&course, &request.prerequisite_ids)
            .await?;
        self.outline(&course.id).await
    }
}
