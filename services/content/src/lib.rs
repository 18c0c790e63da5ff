//! The content service (`duovarsity.content.v1.ContentService`): lesson bodies in Markdown,
//! edited as drafts and published as immutable numbered versions, and lesson media kept in
//! an object store (the local filesystem under the data directory by default, S3-compatible
//! storage by URL).
//!
//! Who may read or edit a lesson's content is the course service's decision
//! (`CheckLessonAccess`, called with the caller's own token), so the rules live in one
//! place. Published content is read through the two-level cache; responses carry `etag`,
//! `cache-control` and cache-tag metadata that the gateway turns into HTTP caching (304 on
//! a match) and that drop its edge-cached copies when the course changes.
//!
//! Rooms: [`grpc`] holds thin handlers and the HTTP caching policy; `access` asks the
//! course service, `lessons` decides drafts and versions, `media` stores files; `convert`
//! is the one place rows become protobuf; [`store`] runs SQL and nothing else.
#![forbid(unsafe_code)]

mod access;
mod convert;
pub mod grpc;
mod lessons;
mod media;
pub mod store;

pub use media::ALLOWED_MEDIA_TYPES;

use std::sync::Arc;

use async_trait::async_trait;
use duovarsity_common::cache::{Cache, CacheHub};
use duovarsity_common::clients::CourseClient;
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::events::EventBus;
use duovarsity_common::grpc::GrpcServer;
use duovarsity_config::Config;
use duovarsity_module::{BackgroundTask, OpenError, ServiceContext, ServiceModule};
use duovarsity_proto::content::content_service_server::ContentServiceServer;
use object_store::ObjectStore;
use tokio_util::sync::CancellationToken;

use crate::grpc::ContentGrpc;
use crate::media::open_object_store;
use crate::store::ContentStore;

pub const SERVICE: &str = "content";
pub(crate) const LATEST_CACHE: &str = "lesson_content";
const VERSION_CACHE: &str = "lesson_version";
const MAX_MARKDOWN_BYTES: usize = 256 * 1024;
const MAX_ATTACHMENTS: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("content database: {0}")]
    Database(#[from] duovarsity_common::db::OpenError),
    #[error("DUOVARSITY_MEDIA_URL: {0}")]
    Media(String),
    #[error("DUOVARSITY_COURSE_SERVICE_URL: {0}")]
    CourseService(#[from] tonic::transport::Error),
}

pub struct ContentModule {
    db: Database,
    contents: Contents,
    /// Held for its invalidation subscriber, which stops with the last handle.
    _caches: CacheHub,
}

impl ContentModule {
    async fn start(config: &Config, caches: &CacheHub) -> Result<Self, StartError> {
        let db = Database::open(&config.database(SERVICE), store::migrations()).await?;
        let media = open_object_store(&config.media_url(), config.media_options())?;
        let courses = CourseClient::new(config.service_channel("course", CourseClient::endpoint)?);
        let contents = Contents {
            store: Arc::new(ContentStore::new(db.clone())),
            media,
            courses,
            latest: caches.cache(LATEST_CACHE),
            versions: caches.cache(VERSION_CACHE),
            media_max_bytes: config.media_max_bytes,
        };
        Ok(Self {
            db,
            contents,
            _caches: caches.clone(),
        })
    }

    pub fn contents(&self) -> &Contents {
        &self.contents
    }
}

#[async_trait]
impl ServiceModule for ContentModule {
    const NAME: &'static str = SERVICE;
    const GRPC_SERVICES: &'static [&'static str] =
        &[duovarsity_proto::content::content_service_server::SERVICE_NAME];

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

    /// Publishes this service's outbox (`lesson.published`) until `shutdown`.
    fn background(
        &self,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> Vec<BackgroundTask> {
        let relay = self.contents.store.outbox().relay(self.db.clone(), bus);
        vec![Box::pin(relay.run(shutdown))]
    }

    fn register(&self, server: GrpcServer) -> GrpcServer {
        // Media uploads are larger than tonic's 4 MiB default.
        let limit = self.contents.media_max_bytes + 64 * 1024;
        server.add_service(
            ContentServiceServer::new(ContentGrpc(self.contents.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
    }
}

/// The gRPC handlers.
#[derive(Clone)]
pub struct Contents {
    store: Arc<ContentStore>,
    media: Arc<dyn ObjectStore>,
    courses: CourseClient,
    latest: Cache,
    versions: Cache,
    media_max_bytes: usize,
}
