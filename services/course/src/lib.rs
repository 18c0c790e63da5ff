//! The course service (`duovarsity.course.v1.CourseService`): the catalog, course outlines,
//! prerequisites, enrollment, lesson progress and completion certificates.
//!
//! Course outlines are read through the two-level cache ([`duovarsity_common::cache`]) and
//! invalidated by every write that changes them. Visibility rules live in [`rules`], SQL in
//! [`store`].
#![forbid(unsafe_code)]

pub mod rules;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use duovarsity_common::auth::{Claims, caller, optional_caller};
use duovarsity_common::cache::{Cache, CacheHub};
use duovarsity_common::db::{Database, Migrations, now_millis, timestamp_from_millis};
use duovarsity_common::events::{EventBus, pending_event};
use duovarsity_common::grpc::{GrpcServer, Probe};
use duovarsity_common::module::{BackgroundTask, OpenError, ServiceContext, ServiceModule};
use duovarsity_common::validate::page_token;
use duovarsity_common::{Config, Error};
use duovarsity_proto::course::course_service_server::{CourseService, CourseServiceServer};
use duovarsity_proto::course::*;
use duovarsity_proto::events::{
    CoursePublished, EnrollmentCompleted, EnrollmentCreated, LessonCompleted, LessonProgressed,
};
use prost::Message;
use ring::rand::{SecureRandom, SystemRandom};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::rules::{
    can_view, check_language, check_price, check_slug, check_summary, check_tags, check_title,
    ensure_can_edit, ensure_valid, valid_id,
};
use crate::store::{
    CatalogFilter, CoursePatch, CourseRow, CourseStore, EnrollmentRow, LessonPatch, LessonRow,
    ProgressEvents, ProgressRow, Reorderable, SectionRow,
};

pub const SERVICE: &str = "course";
const DEFAULT_PAGE_SIZE: u32 = 20;
const MAX_PAGE_SIZE: u32 = 100;
/// The cache of encoded `CourseOutline`s, keyed by course id.
pub const OUTLINE_CACHE: &str = "course_outline";
/// Which course a lesson belongs to (never changes), keyed by lesson id.
pub const LESSON_COURSE_CACHE: &str = "lesson_course";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("course database: {0}")]
    Database(#[from] duovarsity_common::db::OpenError),
}

/// An opened course service.
pub struct CourseModule {
    db: Database,
    courses: Courses,
    caches: CacheHub,
}

impl CourseModule {
    pub async fn open(config: &Config, caches: &CacheHub) -> Result<Self, StartError> {
        let db = Database::open(config, SERVICE, store::migrations()).await?;
        let courses = Courses {
            store: Arc::new(CourseStore::new(db.clone())),
            outlines: caches.cache(OUTLINE_CACHE),
            lesson_courses: caches.cache(LESSON_COURSE_CACHE),
        };
        Ok(Self {
            db,
            courses,
            caches: caches.clone(),
        })
    }

    pub fn courses(&self) -> &Courses {
        &self.courses
    }
}

#[async_trait]
impl ServiceModule for CourseModule {
    const NAME: &'static str = SERVICE;
    const GRPC_SERVICES: &'static [&'static str] = &["duovarsity.course.v1.CourseService"];

    fn migrations() -> Migrations {
        store::migrations()
    }

    async fn open(context: &ServiceContext) -> Result<Self, OpenError> {
        let caches = context.caches().await?;
        Ok(Self::open(&context.config, &caches).await?)
    }

    fn register(&self, server: GrpcServer) -> GrpcServer {
        server.add_service(CourseServiceServer::new(self.courses.clone()))
    }

    fn probes(&self) -> Vec<Probe> {
        vec![self.db.probe(SERVICE), self.caches.probe()]
    }

    /// Publishes this service's outbox.
    fn background(
        &self,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> Vec<BackgroundTask> {
        let relay = self.courses.store.outbox().relay(self.db.clone(), bus);
        vec![Box::pin(relay.run(shutdown))]
    }

    async fn close(&self) {
        self.db.close().await;
    }
}

/// The gRPC handlers.
#[derive(Clone)]
pub struct Courses {
    store: Arc<CourseStore>,
    outlines: Cache,
    lesson_courses: Cache,
}

impl Courses {
    /// The course (by id or slug), or NOT_FOUND.
    async fn course_row(&self, id_or_slug: &str) -> Result<CourseRow, Error> {
        self.store
            .course(id_or_slug)
            .await?
            .ok_or_else(|| Error::not_found(format!("course {id_or_slug}")))
    }

    /// The course after checking the caller may edit it.
    async fn editable_course(&self, claims: &Claims, course_id: &str) -> Result<CourseRow, Error> {
        let course = self.course_row(valid_id("course_id", course_id)?).await?;
        ensure_can_edit(claims, &course)?;
        Ok(course)
    }

    /// The outline through the cache (encoded once, shared by every reader).
    async fn outline(&self, course_id: &str) -> Result<CourseOutline, Error> {
        let store = self.store.clone();
        let id = course_id.to_string();
        let bytes = self
            .outlines
            .get_or_load(course_id, || async move {
                let course = store
                    .course(&id)
                    .await?
                    .ok_or_else(|| Error::not_found(format!("course {id}")))?;
                let sections = store.outline(&course.id).await?;
                let outline = CourseOutline {
                    course: Some(course_to_proto(&course)),
                    sections: sections
                        .iter()
                        .map(|(s, l)| section_to_proto(s, l))
                        .collect(),
                };
                Ok(Bytes::from(outline.encode_to_vec()))
            })
            .await?;
        CourseOutline::decode(bytes).map_err(|e| Error::internal("decoding a cached outline", &e))
    }

    async fn changed(&self, course_id: &str) {
        self.outlines.invalidate(course_id).await;
    }

    async fn is_enrolled(&self, claims: Option<&Claims>, course_id: &str) -> Result<bool, Error> {
        match claims {
            Some(claims) => Ok(self
                .store
                .enrollment(course_id, &claims.sub)
                .await?
                .is_some()),
            None => Ok(false),
        }
    }

    /// The section and its course, after checking the caller may edit the course.
    async fn editable_section(
        &self,
        claims: &Claims,
        section_id: &str,
    ) -> Result<(SectionRow, CourseRow), Error> {
        let section = self
            .store
            .section(valid_id("section_id", section_id)?)
            .await?
            .ok_or_else(|| Error::not_found(format!("section {section_id}")))?;
        let course = self.editable_course(claims, &section.course_id).await?;
        Ok((section, course))
    }

    async fn editable_lesson(
        &self,
        claims: &Claims,
        lesson_id: &str,
    ) -> Result<(LessonRow, CourseRow), Error> {
        let lesson = self
            .store
            .lesson(valid_id("lesson_id", lesson_id)?)
            .await?
            .ok_or_else(|| Error::not_found(format!("lesson {lesson_id}")))?;
        let course = self.editable_course(claims, &lesson.course_id).await?;
        Ok((lesson, course))
    }

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
            level: level_name(input.level).unwrap_or("beginner").to_string(),
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
        Ok(course_to_proto(&course))
    }

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
        let stored = self
            .store
            .section(&section.id)
            .await?
            .ok_or(Error::Internal)?;
        Ok(section_to_proto(&stored, &[]))
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
        ensure_valid([
            check_title("title", &request.title),
            (!(0..=1440).contains(&request.estimated_minutes)).then(|| {
                duovarsity_common::FieldViolation::new("estimated_minutes", "must be 0 to 1440")
            }),
        ])?;
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
            .ok_or(Error::Internal)?;
        Ok(lesson_to_proto(&stored))
    }

    /// The stored course (seed, after creating it).
    pub async fn course_by_id(&self, id: &str) -> Result<CourseRow, Error> {
        self.course_row(id).await
    }

    /// The section row (seed).
    pub async fn section_row(&self, id: &str) -> Result<SectionRow, Error> {
        self.store
            .section(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("section {id}")))
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
        let event = (course.status != "published").then_some(&published);
        self.store
            .set_status(&course.id, "published", now_millis(), event)
            .await?;
        self.changed(&course.id).await;
        Ok(course_to_proto(&self.course_row(&course.id).await?))
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
        self.store.set_prerequisites(&course.id, &ids).await?;
        self.changed(&course.id).await;
        Ok(())
    }

    fn certificate_number() -> Result<String, Error> {
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
}

fn dedup(items: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

fn page_size(requested: i32) -> Result<u32, Error> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 || n as u32 > MAX_PAGE_SIZE => {
            Err(Error::invalid("page_size", "must be between 1 and 100"))
        }
        n => Ok(n as u32),
    }
}

fn level_name(level: i32) -> Option<&'static str> {
    match Level::try_from(level).ok()? {
        Level::Beginner => Some("beginner"),
        Level::Intermediate => Some("intermediate"),
        Level::Advanced => Some("advanced"),
        Level::Unspecified => None,
    }
}

fn level_from_name(name: &str) -> Level {
    match name {
        "intermediate" => Level::Intermediate,
        "advanced" => Level::Advanced,
        _ => Level::Beginner,
    }
}

fn kind_name(kind: i32) -> Option<&'static str> {
    match LessonKind::try_from(kind).ok()? {
        LessonKind::Text => Some("text"),
        LessonKind::Video => Some("video"),
        LessonKind::Quiz => Some("quiz"),
        LessonKind::Unspecified => None,
    }
}

fn kind_from_name(name: &str) -> LessonKind {
    match name {
        "video" => LessonKind::Video,
        "quiz" => LessonKind::Quiz,
        _ => LessonKind::Text,
    }
}

fn status_from_name(name: &str) -> CourseStatus {
    match name {
        "published" => CourseStatus::Published,
        "archived" => CourseStatus::Archived,
        _ => CourseStatus::Draft,
    }
}

fn status_name(status: i32) -> &'static str {
    match CourseStatus::try_from(status) {
        Ok(CourseStatus::Published) => "published",
        Ok(CourseStatus::Archived) => "archived",
        _ => "draft",
    }
}

fn enrollment_status(name: &str) -> EnrollmentStatus {
    match name {
        "active" => EnrollmentStatus::Active,
        "pending_payment" => EnrollmentStatus::PendingPayment,
        "completed" => EnrollmentStatus::Completed,
        _ => EnrollmentStatus::Cancelled,
    }
}

fn course_to_proto(course: &CourseRow) -> Course {
    Course {
        id: course.id.clone(),
        slug: course.slug.clone(),
        title: course.title.clone(),
        summary: course.summary.clone(),
        level: level_from_name(&course.level) as i32,
        tags: course.tags.clone(),
        language: course.language.clone(),
        price: course.price.as_ref().map(|(currency, amount_minor)| Money {
            currency: currency.clone(),
            amount_minor: *amount_minor,
        }),
        status: status_from_name(&course.status) as i32,
        instructor_id: course.instructor_id.clone(),
        prerequisite_ids: course.prerequisite_ids.clone(),
        created_at: Some(timestamp_from_millis(course.created_at)),
        updated_at: Some(timestamp_from_millis(course.updated_at)),
        published_at: course.published_at.map(timestamp_from_millis),
    }
}

fn section_to_proto(section: &SectionRow, lessons: &[LessonRow]) -> Section {
    Section {
        id: section.id.clone(),
        course_id: section.course_id.clone(),
        title: section.title.clone(),
        position: section.position,
        lessons: lessons.iter().map(lesson_to_proto).collect(),
    }
}

fn lesson_to_proto(lesson: &LessonRow) -> Lesson {
    Lesson {
        id: lesson.id.clone(),
        section_id: lesson.section_id.clone(),
        course_id: lesson.course_id.clone(),
        title: lesson.title.clone(),
        kind: kind_from_name(&lesson.kind) as i32,
        estimated_minutes: lesson.estimated_minutes,
        required: lesson.required,
        position: lesson.position,
    }
}

fn enrollment_to_proto(enrollment: &EnrollmentRow) -> Enrollment {
    Enrollment {
        id: enrollment.id.clone(),
        course_id: enrollment.course_id.clone(),
        learner_id: enrollment.learner_id.clone(),
        status: enrollment_status(&enrollment.status) as i32,
        enrolled_at: Some(timestamp_from_millis(enrollment.enrolled_at)),
        completed_at: enrollment.completed_at.map(timestamp_from_millis),
        certificate_number: enrollment.certificate_number.clone().unwrap_or_default(),
    }
}

fn progress_to_proto(progress: &ProgressRow) -> LessonProgress {
    LessonProgress {
        lesson_id: progress.lesson_id.clone(),
        percent: progress.percent,
        position_seconds: progress.position_seconds,
        completed: progress.completed_at.is_some(),
        updated_at: Some(timestamp_from_millis(progress.updated_at)),
    }
}

#[tonic::async_trait]
impl CourseService for Courses {
    async fn create_course(
        &self,
        request: Request<CreateCourseRequest>,
    ) -> Result<Response<Course>, Status> {
        let owner = caller(&request)?.sub.clone();
        let input = request
            .into_inner()
            .course
            .ok_or_else(|| Error::invalid("course", "is required"))?;
        Ok(Response::new(
            Courses::create_course(self, &owner, &input).await?,
        ))
    }

    async fn update_course(
        &self,
        request: Request<UpdateCourseRequest>,
    ) -> Result<Response<Course>, Status> {
        let claims = caller(&request)?.clone();
        let request = request.into_inner();
        let input = request
            .course
            .ok_or_else(|| Error::invalid("course", "is required"))?;
        let course = self.editable_course(&claims, &input.id).await?;
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
                    Some(level) => patch.level = Some(level.into()),
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
        self.store
            .update_course(&course.id, &patch, now_millis())
            .await?;
        self.changed(&course.id).await;
        Ok(Response::new(course_to_proto(
            &self.course_row(&course.id).await?,
        )))
    }

    async fn publish_course(
        &self,
        request: Request<PublishCourseRequest>,
    ) -> Result<Response<Course>, Status> {
        let claims = caller(&request)?.clone();
        let course = self
            .editable_course(&claims, &request.into_inner().id)
            .await?;
        Ok(Response::new(self.publish(&course).await?))
    }

    async fn archive_course(
        &self,
        request: Request<ArchiveCourseRequest>,
    ) -> Result<Response<Course>, Status> {
        let claims = caller(&request)?.clone();
        let course = self
            .editable_course(&claims, &request.into_inner().id)
            .await?;
        self.store
            .set_status(&course.id, "archived", now_millis(), None)
            .await?;
        self.changed(&course.id).await;
        Ok(Response::new(course_to_proto(
            &self.course_row(&course.id).await?,
        )))
    }

    async fn get_course(
        &self,
        request: Request<GetCourseRequest>,
    ) -> Result<Response<CourseOutline>, Status> {
        let claims = optional_caller(&request).cloned();
        let key = request.into_inner().id;
        // Slugs resolve to ids once; the cache is keyed by id so invalidation has one key.
        let id = if uuid::Uuid::parse_str(&key).is_ok() {
            key.clone()
        } else {
            self.course_row(&key).await?.id
        };
        let outline = self.outline(&id).await?;
        let course = outline.course.as_ref().ok_or(Error::Internal)?;
        let status = status_name(course.status);
        let enrolled =
            status == "archived" && self.is_enrolled(claims.as_ref(), &course.id).await?;
        if !can_view(claims.as_ref(), status, &course.instructor_id, enrolled) {
            return Err(Error::not_found(format!("course {key}")).into());
        }
        Ok(Response::new(outline))
    }

    async fn list_courses(
        &self,
        request: Request<ListCoursesRequest>,
    ) -> Result<Response<ListCoursesResponse>, Status> {
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let cursor = if request.page_token.is_empty() {
            None
        } else {
            let parsed = page_token::decode(&request.page_token).and_then(|text| {
                let (at, id) = text.split_once(':')?;
                Some((at.parse::<i64>().ok()?, id.to_string()))
            });
            Some(parsed.ok_or_else(|| {
                Error::invalid("page_token", "is not a token returned by ListCourses")
            })?)
        };
        let filter = CatalogFilter {
            tag: request.tag,
            level: if request.level == 0 {
                String::new()
            } else {
                level_name(request.level)
                    .ok_or_else(|| Error::invalid("level", "is not a level"))?
                    .to_string()
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
        let mut rows = self
            .store
            .list_published(&filter, cursor.as_ref(), limit + 1)
            .await?;
        let next_page_token = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last()
                .map(|c| {
                    page_token::encode(&format!("{}:{}", c.published_at.unwrap_or_default(), c.id))
                })
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListCoursesResponse {
            courses: rows.iter().map(course_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn set_prerequisites(
        &self,
        request: Request<SetPrerequisitesRequest>,
    ) -> Result<Response<CourseOutline>, Status> {
        let claims = caller(&request)?.clone();
        let request = request.into_inner();
        let course = self.editable_course(&claims, &request.course_id).await?;
        self.replace_prerequisites(&course, &request.prerequisite_ids)
            .await?;
        Ok(Response::new(self.outline(&course.id).await?))
    }

    async fn create_section(
        &self,
        request: Request<CreateSectionRequest>,
    ) -> Result<Response<Section>, Status> {
        let claims = caller(&request)?.clone();
        let request = request.into_inner();
        let course = self.editable_course(&claims, &request.course_id).await?;
        Ok(Response::new(
            self.add_section(&course.id, &request.title).await?,
        ))
    }

    async fn update_section(
        &self,
        request: Request<UpdateSectionRequest>,
    ) -> Result<Response<Section>, Status> {
        let claims = caller(&request)?.clone();
        let request = request.into_inner();
        let (section, course) = self.editable_section(&claims, &request.id).await?;
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
            .ok_or(Error::Internal)?;
        Ok(Response::new(updated))
    }

    async fn delete_section(
        &self,
        request: Request<DeleteSectionRequest>,
    ) -> Result<Response<DeleteSectionResponse>, Status> {
        let claims = caller(&request)?.clone();
        let (section, course) = self
            .editable_section(&claims, &request.into_inner().id)
            .await?;
        self.store.delete_section(&section.id).await?;
        self.changed(&course.id).await;
        Ok(Response::new(DeleteSectionResponse {}))
    }

    async fn reorder_sections(
        &self,
        request: Request<ReorderSectionsRequest>,
    ) -> Result<Response<CourseOutline>, Status> {
        let claims = caller(&request)?.clone();
        let request = request.into_inner();
        let course = self.editable_course(&claims, &request.course_id).await?;
        ensure_same_members(
            "section_ids",
            &self.store.section_ids(&course.id).await?,
            &request.section_ids,
        )?;
        self.store
            .reorder(Reorderable::Sections, &request.section_ids)
            .await?;
        self.changed(&course.id).await;
        Ok(Response::new(self.outline(&course.id).await?))
    }

    async fn create_lesson(
        &self,
        request: Request<CreateLessonRequest>,
    ) -> Result<Response<Lesson>, Status> {
        let claims = caller(&request)?.clone();
        let request = request.into_inner();
        let (section, _) = self.editable_section(&claims, &request.section_id).await?;
        Ok(Response::new(self.add_lesson(&section, &request).await?))
    }

    async fn update_lesson(
        &self,
        request: Request<UpdateLessonRequest>,
    ) -> Result<Response<Lesson>, Status> {
        let claims = caller(&request)?.clone();
        let request = request.into_inner();
        let (lesson, course) = self.editable_lesson(&claims, &request.id).await?;
        let kind = match request.kind {
            Some(kind) => Some(
                kind_name(kind)
                    .ok_or_else(|| Error::invalid("kind", "is not a lesson kind"))?
                    .to_string(),
            ),
            None => None,
        };
        ensure_valid([
            request
                .title
                .as_deref()
                .and_then(|t| check_title("title", t)),
            request
                .estimated_minutes
                .filter(|m| !(0..=1440).contains(m))
                .map(|_| {
                    duovarsity_common::FieldViolation::new("estimated_minutes", "must be 0 to 1440")
                }),
        ])?;
        let patch = LessonPatch {
            title: request.title.map(|t| t.trim().to_string()),
            kind,
            estimated_minutes: request.estimated_minutes,
            required: request.required,
        };
        self.store.update_lesson(&lesson.id, &patch).await?;
        self.changed(&course.id).await;
        Ok(Response::new(lesson_to_proto(
            &self
                .store
                .lesson(&lesson.id)
                .await?
                .ok_or(Error::Internal)?,
        )))
    }

    async fn delete_lesson(
        &self,
        request: Request<DeleteLessonRequest>,
    ) -> Result<Response<DeleteLessonResponse>, Status> {
        let claims = caller(&request)?.clone();
        let (lesson, course) = self
            .editable_lesson(&claims, &request.into_inner().id)
            .await?;
        self.store.delete_lesson(&lesson.id).await?;
        self.changed(&course.id).await;
        Ok(Response::new(DeleteLessonResponse {}))
    }

    async fn reorder_lessons(
        &self,
        request: Request<ReorderLessonsRequest>,
    ) -> Result<Response<Section>, Status> {
        let claims = caller(&request)?.clone();
        let request = request.into_inner();
        let (section, course) = self.editable_section(&claims, &request.section_id).await?;
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
        Ok(Response::new(
            outline
                .sections
                .into_iter()
                .find(|s| s.id == section.id)
                .ok_or(Error::Internal)?,
        ))
    }

    async fn enroll(
        &self,
        request: Request<EnrollRequest>,
    ) -> Result<Response<Enrollment>, Status> {
        let learner = caller(&request)?.sub.clone();
        let course = self
            .course_row(valid_id("course_id", &request.into_inner().course_id)?)
            .await?;
        if course.status != "published" {
            // Drafts do not exist for outsiders; archived courses are closed.
            return Err(match course.status.as_str() {
                "archived" => Error::FailedPrecondition {
                    reason: "COURSE_ARCHIVED",
                    message: "this course is archived and takes no new enrollments".into(),
                },
                _ => Error::not_found(format!("course {}", course.id)),
            }
            .into());
        }
        if let Some(existing) = self.store.enrollment(&course.id, &learner).await?
            && existing.status != "cancelled"
        {
            return Ok(Response::new(enrollment_to_proto(&existing)));
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
            }
            .into());
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
        Ok(Response::new(enrollment_to_proto(
            &self.store.enroll(&enrollment, &created).await?,
        )))
    }

    async fn list_my_enrollments(
        &self,
        request: Request<ListMyEnrollmentsRequest>,
    ) -> Result<Response<ListMyEnrollmentsResponse>, Status> {
        let learner = caller(&request)?.sub.clone();
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let after = if request.page_token.is_empty() {
            None
        } else {
            Some(page_token::decode(&request.page_token).ok_or_else(|| {
                Error::invalid("page_token", "is not a token returned by ListMyEnrollments")
            })?)
        };
        let mut rows = self
            .store
            .enrollments_of(&learner, after.as_deref(), limit + 1)
            .await?;
        let next_page_token = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last()
                .map(|e| page_token::encode(&e.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListMyEnrollmentsResponse {
            enrollments: rows.iter().map(enrollment_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn get_course_stats(
        &self,
        request: Request<GetCourseStatsRequest>,
    ) -> Result<Response<CourseStats>, Status> {
        let claims = caller(&request)?.clone();
        let course = self
            .editable_course(&claims, &request.into_inner().course_id)
            .await?;
        let counts = self.store.enrollment_counts(&course.id).await?;
        let started = counts.active + counts.completed;
        Ok(Response::new(CourseStats {
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
        }))
    }

    async fn record_progress(
        &self,
        request: Request<RecordProgressRequest>,
    ) -> Result<Response<RecordProgressResponse>, Status> {
        let learner = caller(&request)?.sub.clone();
        let request = request.into_inner();
        ensure_valid([
            (!(0..=100).contains(&request.percent))
                .then(|| duovarsity_common::FieldViolation::new("percent", "must be 0 to 100")),
            (request.position_seconds < 0).then(|| {
                duovarsity_common::FieldViolation::new("position_seconds", "must not be negative")
            }),
        ])?;
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
            }
            .into());
        }
        let course = self.course_row(&lesson.course_id).await?;
        let certificate_number = Courses::certificate_number()?;
        let progressed = LessonProgressed {
            learner_id: enrollment.learner_id.clone(),
            course_id: lesson.course_id.clone(),
            lesson_id: lesson.id.clone(),
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
        Ok(Response::new(RecordProgressResponse {
            progress: Some(progress_to_proto(&outcome.progress)),
            enrollment: Some(enrollment_to_proto(&outcome.enrollment)),
        }))
    }

    async fn get_course_progress(
        &self,
        request: Request<GetCourseProgressRequest>,
    ) -> Result<Response<CourseProgress>, Status> {
        let learner = caller(&request)?.sub.clone();
        let course_id = request.into_inner().course_id;
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
        Ok(Response::new(CourseProgress {
            enrollment: Some(enrollment_to_proto(&enrollment)),
            lessons,
            required_lessons: required.len() as i32,
            completed_required_lessons: completed_required as i32,
        }))
    }

    async fn get_certificate(
        &self,
        request: Request<GetCertificateRequest>,
    ) -> Result<Response<Certificate>, Status> {
        let number = request.into_inner().number.trim().to_uppercase();
        let certificate = self
            .store
            .certificate(&number)
            .await?
            .ok_or_else(|| Error::not_found(format!("certificate {number}")))?;
        Ok(Response::new(Certificate {
            number: certificate.number,
            course_id: certificate.course_id,
            course_title: certificate.course_title,
            learner_id: certificate.learner_id,
            completed_at: Some(timestamp_from_millis(certificate.completed_at)),
        }))
    }

    async fn check_lesson_access(
        &self,
        request: Request<CheckLessonAccessRequest>,
    ) -> Result<Response<LessonAccess>, Status> {
        let claims = optional_caller(&request).cloned();
        let lesson_id = request.into_inner().lesson_id;
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
        let still_there = outline
            .sections
            .iter()
            .flat_map(|s| &s.lessons)
            .any(|l| l.id == lesson_id);
        let course = outline.course.ok_or(Error::Internal)?;
        if !still_there {
            return Err(Error::not_found(format!("lesson {lesson_id}")).into());
        }
        let status = status_name(course.status);
        let enrolled =
            status == "archived" && self.is_enrolled(claims.as_ref(), &course.id).await?;
        let can_edit = claims
            .as_ref()
            .is_some_and(|c| rules::can_edit(c, &course.instructor_id));
        Ok(Response::new(LessonAccess {
            course_id: course.id.clone(),
            can_read: can_view(claims.as_ref(), status, &course.instructor_id, enrolled),
            can_edit,
            public: status == "published",
        }))
    }
}

/// `proposed` must name exactly the ids in `current`, each once.
fn ensure_same_members(field: &str, current: &[String], proposed: &[String]) -> Result<(), Error> {
    let mut a = current.to_vec();
    let mut b = proposed.to_vec();
    a.sort();
    b.sort();
    if a == b {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must list every current item exactly once",
        ))
    }
}
