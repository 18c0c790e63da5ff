//! The course service (`duovarsity.course.v1.CourseService`): the catalog, course outlines,
//! prerequisites, enrollment, lesson progress and completion certificates.
//!
//! Rooms: [`grpc`] holds thin handlers (decode, take the caller, call one domain function);
//! the rules live in the domain modules `catalog` (courses, sections, lessons,
//! prerequisites, publication), `enrollment` (joining, statistics, access answers) and
//! `progress` (progress, completion, certificates), with who-may-see-what in [`rules`];
//! `convert` is the one place rows become protobuf; [`store`] runs SQL and nothing else.
//!
//! Course outlines are read through the two-level cache ([`duovarsity_common::cache`]) and
//! invalidated by every write that changes them.
#![forbid(unsafe_code)]

mod catalog;
mod convert;
mod enrollment;
pub mod grpc;
pub mod payments;
mod progress;
pub mod rules;
mod sections;
pub mod store;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use duovarsity_common::Error;
use duovarsity_common::auth::Claims;
use duovarsity_common::cache::{Cache, CacheHub};
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::events::EventBus;
use duovarsity_common::events::catalog::topics;
use duovarsity_common::events::consumer::Consumer;
use duovarsity_common::grpc::GrpcServer;
use duovarsity_config::Config;
use duovarsity_module::{BackgroundTask, OpenError, ServiceContext, ServiceModule};
use duovarsity_proto::course::course_service_server::CourseServiceServer;
use duovarsity_proto::course::*;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::convert::{course_to_proto, section_to_proto};
use crate::rules::{ensure_can_edit, valid_id};
use crate::store::{CourseRow, CourseStore, LessonRow, SectionRow};

pub const SERVICE: &str = "course";
const DEFAULT_PAGE_SIZE: u32 = 20;
/// The cache of encoded `CourseOutline`s, keyed by course id.
pub const OUTLINE_CACHE: &str = duovarsity_common::cache::COURSE_OUTLINE_CACHE;
/// Which course a lesson belongs to (never changes), keyed by lesson id.
pub const LESSON_COURSE_CACHE: &str = "lesson_course";
/// Course slug to id: public course pages are asked for by slug, and resolving it must
/// not cost a database read per request. Dropped when a course's slug changes.
pub const SLUG_CACHE: &str = "course_slug";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("course database: {0}")]
    Database(#[from] duovarsity_common::db::OpenError),
}

/// An opened course service.
pub struct CourseModule {
    db: Database,
    courses: Courses,
    /// Held for its invalidation subscriber, which stops with the last handle.
    _caches: CacheHub,
}

impl CourseModule {
    async fn start(config: &Config, caches: &CacheHub) -> Result<Self, StartError> {
        let db = Database::open(&config.database(SERVICE), store::migrations()).await?;
        let courses = Courses {
            store: Arc::new(CourseStore::new(db.clone())),
            outlines: caches.cache(OUTLINE_CACHE),
            lesson_courses: caches.cache(LESSON_COURSE_CACHE),
            slugs: caches.cache(SLUG_CACHE),
        };
        Ok(Self {
            db,
            courses,
            _caches: caches.clone(),
        })
    }

    pub fn courses(&self) -> &Courses {
        &self.courses
    }
}

#[async_trait]
impl ServiceModule for CourseModule {
    const NAME: &'static str = SERVICE;
    const GRPC_SERVICES: &'static [&'static str] =
        &[duovarsity_proto::course::course_service_server::SERVICE_NAME];

    fn migrations() -> Migrations {
        store::migrations()
    }

    async fn open(context: &ServiceContext) -> Result<Self, OpenError> {
        let caches = context.caches().await?;
        Ok(Self::start(&context.config, &caches).await?)
    }

    fn database(&self) -> &Database {
        &self.db
    }

    fn register(&self, server: GrpcServer) -> GrpcServer {
        server.add_service(CourseServiceServer::new(grpc::CourseGrpc(
            self.courses.clone(),
        )))
    }

    /// Publishes this service's outbox, and applies payments to enrollments.
    fn background(
        &self,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> Vec<BackgroundTask> {
        let relay = self
            .courses
            .store
            .outbox()
            .relay(self.db.clone(), bus.clone());
        let payments = Consumer::new(
            self.db.clone(),
            store::PROCESSED_TABLE,
            bus,
            topics::PAYMENT,
            payments::GROUP,
            payments::PaymentEvents {
                store: self.courses.store.clone(),
            },
        );
        let stop = shutdown.clone();
        vec![
            Box::pin(relay.run(shutdown)),
            Box::pin(async move {
                if let Err(error) = payments.run(stop).await {
                    tracing::error!(%error, "course payment consumer stopped");
                }
            }),
        ]
    }
}

/// The gRPC handlers.
#[derive(Clone)]
pub struct Courses {
    store: Arc<CourseStore>,
    outlines: Cache,
    lesson_courses: Cache,
    slugs: Cache,
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
                    course: Some(course_to_proto(&course)?),
                    sections: sections
                        .iter()
                        .map(|(s, l)| section_to_proto(s, l))
                        .collect::<Result<_, _>>()?,
                };
                Ok(Bytes::from(outline.encode_to_vec()))
            })
            .await?;
        CourseOutline::decode(bytes).map_err(|e| Error::internal("decoding a cached outline", &e))
    }

    /// The id of the course with `slug` (NOT_FOUND is not remembered: a course may take
    /// the slug later).
    async fn course_id_for_slug(&self, slug: &str) -> Result<String, Error> {
        let bytes = self
            .slugs
            .get_or_load(slug, || async {
                Ok(Bytes::from(self.course_row(slug).await?.id))
            })
            .await?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| Error::internal("decoding a cached course id", &e))
    }

    async fn changed(&self, course_id: &str) {
        self.outlines.invalidate(course_id).await;
    }

    /// Whether the caller's enrollment in the course grants access (active or completed;
    /// not one waiting for payment, nor a cancelled or refunded one).
    async fn is_enrolled(&self, claims: Option<&Claims>, course_id: &str) -> Result<bool, Error> {
        match claims {
            Some(claims) => Ok(self
                .store
                .enrollment(course_id, &claims.sub)
                .await?
                .is_some_and(|e| crate::rules::grants_access(&e.status))),
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

fn page_size(requested: i32) -> u32 {
    duovarsity_common::validate::page_size(requested, DEFAULT_PAGE_SIZE)
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
