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
#![forbid(unsafe_code)]

mod media;
pub mod store;

pub use media::ALLOWED_MEDIA_TYPES;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use duovarsity_common::Error;
use duovarsity_common::auth::caller;
use duovarsity_common::cache::{COURSE_OUTLINE_CACHE, Cache, CacheHub};
use duovarsity_common::clients::CourseClient;
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::grpc::{GrpcServer, Onward, http_cacheable};
use duovarsity_common::health::Probe;
use duovarsity_common::time::{now_millis, timestamp_from_millis};
use duovarsity_config::Config;
use duovarsity_module::{OpenError, ServiceContext, ServiceModule};
use duovarsity_proto::content::content_service_server::{ContentService, ContentServiceServer};
use duovarsity_proto::content::*;
use duovarsity_proto::course::LessonAccess;
use duovarsity_proto::google::api::HttpBody;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use prost::Message;
use tonic::{Request, Response, Status};

use crate::media::open_object_store;
use crate::store::{ContentStore, DraftRow, VersionRow};

pub const SERVICE: &str = "content";
const LATEST_CACHE: &str = "lesson_content";
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

    fn register(&self, server: GrpcServer) -> GrpcServer {
        // Media uploads are larger than tonic's 4 MiB default.
        let limit = self.contents.media_max_bytes + 64 * 1024;
        server.add_service(
            ContentServiceServer::new(self.contents.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
    }

    /// The database only: Redis is not needed to answer (the caches fall back to L1 and
    /// the database), and failing readiness on every replica while Redis is down would turn
    /// a cache outage into an outage.
    fn probes(&self) -> Vec<Probe> {
        vec![self.db.probe(SERVICE)]
    }

    async fn close(&self) {
        self.db.close().await;
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

impl Contents {
    /// Asks the course service what the caller (its forwarded token) may do with a lesson.
    async fn access<T>(
        &self,
        request: &Request<T>,
        lesson_id: &str,
    ) -> Result<LessonAccess, Error> {
        // Every request naming a lesson declares it a UUID (content.proto), and the
        // validation layer refused any other.
        self.courses
            .lesson_access(&Onward::of(request), lesson_id)
            .await
    }

    async fn readable<T>(
        &self,
        request: &Request<T>,
        lesson_id: &str,
    ) -> Result<LessonAccess, Error> {
        let access = self.access(request, lesson_id).await?;
        if access.can_read || access.can_edit {
            Ok(access)
        } else {
            Err(Error::not_found(format!("lesson {lesson_id}")))
        }
    }

    async fn editable<T>(
        &self,
        request: &Request<T>,
        lesson_id: &str,
    ) -> Result<LessonAccess, Error> {
        let access = self.access(request, lesson_id).await?;
        if access.can_edit {
            Ok(access)
        } else if access.can_read {
            Err(Error::permission_denied(
                "NOT_COURSE_OWNER",
                "only the course's instructor or an admin may edit its content",
            ))
        } else {
            Err(Error::not_found(format!("lesson {lesson_id}")))
        }
    }

    async fn attachments(&self, ids: &[String]) -> Result<Vec<Attachment>, Error> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(media) = self.store.media(id).await? {
                out.push(Attachment {
                    media_id: media.id.clone(),
                    filename: media.filename.clone(),
                    content_type: media.content_type.clone(),
                    size_bytes: media.size_bytes,
                    url: format!("/v1/media/{}", media.id),
                });
            }
        }
        Ok(out)
    }

    async fn content(&self, version: &VersionRow) -> Result<LessonContent, Error> {
        Ok(LessonContent {
            lesson_id: version.lesson_id.clone(),
            course_id: version.course_id.clone(),
            version: i32::try_from(version.version).unwrap_or(i32::MAX),
            markdown: version.markdown.clone(),
            attachments: self.attachments(&version.attachment_ids).await?,
            published_at: Some(timestamp_from_millis(version.published_at)),
        })
    }

    /// A published version (latest when `number` is None) through its cache.
    async fn cached_content(
        &self,
        lesson_id: &str,
        number: Option<i64>,
    ) -> Result<LessonContent, Error> {
        let (cache, key) = match number {
            Some(n) => (&self.versions, format!("{lesson_id}:{n}")),
            None => (&self.latest, lesson_id.to_string()),
        };
        let this = self.clone();
        let id = lesson_id.to_string();
        let bytes = cache
            .get_or_load(&key, || async move {
                let version =
                    this.store.version(&id, number).await?.ok_or_else(|| {
                        Error::not_found(format!("published content of lesson {id}"))
                    })?;
                Ok(Bytes::from(this.content(&version).await?.encode_to_vec()))
            })
            .await?;
        LessonContent::decode(bytes).map_err(|e| Error::internal("decoding cached content", &e))
    }

    /// Saves a draft (seed and SaveLessonDraft, after authorization).
    pub async fn save_draft(
        &self,
        lesson_id: &str,
        markdown: &str,
        attachment_ids: &[String],
        by: &str,
    ) -> Result<LessonDraft, Error> {
        if markdown.len() > MAX_MARKDOWN_BYTES {
            return Err(Error::invalid("markdown", "must be at most 256 KiB"));
        }
        if attachment_ids.len() > MAX_ATTACHMENTS {
            return Err(Error::invalid("attachment_ids", "at most 50 attachments"));
        }
        for id in attachment_ids {
            let belongs = self
                .store
                .media(id)
                .await?
                .is_some_and(|m| m.lesson_id == lesson_id);
            if !belongs {
                return Err(Error::invalid(
                    "attachment_ids",
                    format!("{id} is not media of this lesson"),
                ));
            }
        }
        let draft = DraftRow {
            lesson_id: lesson_id.to_string(),
            markdown: markdown.to_string(),
            attachment_ids: attachment_ids.to_vec(),
            updated_at: now_millis(),
            updated_by: by.to_string(),
        };
        self.store.save_draft(&draft).await?;
        self.draft_message(&draft).await
    }

    /// Publishes the lesson's draft as its next version (seed and PublishLessonContent).
    pub async fn publish(
        &self,
        lesson_id: &str,
        course_id: &str,
        by: &str,
    ) -> Result<LessonContent, Error> {
        let draft =
            self.store
                .draft(lesson_id)
                .await?
                .ok_or_else(|| Error::FailedPrecondition {
                    reason: "NO_DRAFT",
                    message: "save a draft before publishing".into(),
                })?;
        let version = self
            .store
            .publish(&draft, course_id, now_millis(), by)
            .await?;
        self.latest.invalidate(lesson_id).await;
        self.content(&version).await
    }

    async fn draft_message(&self, draft: &DraftRow) -> Result<LessonDraft, Error> {
        let published = self
            .store
            .version(&draft.lesson_id, None)
            .await?
            .map_or(0, |v| v.version);
        Ok(LessonDraft {
            lesson_id: draft.lesson_id.clone(),
            markdown: draft.markdown.clone(),
            attachments: self.attachments(&draft.attachment_ids).await?,
            published_version: i32::try_from(published).unwrap_or(i32::MAX),
            updated_at: Some(timestamp_from_millis(draft.updated_at)),
        })
    }
}

/// Attaches HTTP caching metadata for the gateway; `tags`: the cache entries the
/// response was built from.
fn cacheable<T>(
    message: T,
    etag: String,
    cache_control: &'static str,
    tags: &[(&str, &str)],
) -> Response<T> {
    let mut response = Response::new(message);
    http_cacheable(&mut response, &etag, cache_control, tags);
    response
}

/// Published content is public only while its course is published and free, and that can
/// change at any time (a price, archival, a deleted lesson). So nothing is `immutable`:
/// public answers live a minute in browsers and CDNs and revalidate by ETag, and the
/// gateway's edge cache drops them the moment their course changes (see [`tags`]).
fn published_policy(access: &LessonAccess) -> &'static str {
    if access.public {
        "public, max-age=60"
    } else {
        "private, no-cache"
    }
}

/// The cache tags of a published answer: `own` and the course, whose outline cache the
/// course service invalidates on every change (price, status, lessons), so that edge
/// caches drop the answer when the course's visibility changes.
fn tags<'a>(access: &'a LessonAccess, own: Option<(&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
    own.into_iter()
        .chain([(COURSE_OUTLINE_CACHE, access.course_id.as_str())])
        .collect()
}

#[tonic::async_trait]
impl ContentService for Contents {
    async fn get_lesson_content(
        &self,
        request: Request<GetLessonContentRequest>,
    ) -> Result<Response<LessonContent>, Status> {
        let lesson_id = request.get_ref().lesson_id.clone();
        let access = self.readable(&request, &lesson_id).await?;
        let content = self.cached_content(&lesson_id, None).await?;
        let etag = format!("{lesson_id}-v{}", content.version);
        Ok(cacheable(
            content,
            etag,
            published_policy(&access),
            &tags(&access, Some((LATEST_CACHE, &lesson_id))),
        ))
    }

    async fn get_lesson_version(
        &self,
        request: Request<GetLessonVersionRequest>,
    ) -> Result<Response<LessonContent>, Status> {
        let (lesson_id, number) = (
            request.get_ref().lesson_id.clone(),
            request.get_ref().version,
        );
        if number < 1 {
            return Err(Error::invalid("version", "must be 1 or more").into());
        }
        let access = self.readable(&request, &lesson_id).await?;
        let content = self
            .cached_content(&lesson_id, Some(i64::from(number)))
            .await?;
        Ok(cacheable(
            content,
            format!("{lesson_id}-v{number}"),
            published_policy(&access),
            &tags(&access, None),
        ))
    }

    async fn list_lesson_versions(
        &self,
        request: Request<ListLessonVersionsRequest>,
    ) -> Result<Response<ListLessonVersionsResponse>, Status> {
        let lesson_id = request.get_ref().lesson_id.clone();
        self.readable(&request, &lesson_id).await?;
        let versions = self.store.versions(&lesson_id).await?;
        Ok(Response::new(ListLessonVersionsResponse {
            versions: versions
                .iter()
                .map(|v| LessonVersionSummary {
                    version: i32::try_from(v.version).unwrap_or(i32::MAX),
                    published_at: Some(timestamp_from_millis(v.published_at)),
                    published_by: v.published_by.clone(),
                })
                .collect(),
        }))
    }

    async fn get_lesson_draft(
        &self,
        request: Request<GetLessonDraftRequest>,
    ) -> Result<Response<LessonDraft>, Status> {
        let lesson_id = request.get_ref().lesson_id.clone();
        self.editable(&request, &lesson_id).await?;
        let draft = self
            .store
            .draft(&lesson_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("draft of lesson {lesson_id}")))?;
        let etag = format!("{lesson_id}-d{}", draft.updated_at);
        Ok(cacheable(
            self.draft_message(&draft).await?,
            etag,
            "private, no-cache",
            &[],
        ))
    }

    async fn save_lesson_draft(
        &self,
        request: Request<SaveLessonDraftRequest>,
    ) -> Result<Response<LessonDraft>, Status> {
        let by = caller(&request)?.sub.clone();
        let lesson_id = request.get_ref().lesson_id.clone();
        self.editable(&request, &lesson_id).await?;
        let body = request.into_inner();
        Ok(Response::new(
            self.save_draft(&lesson_id, &body.markdown, &body.attachment_ids, &by)
                .await?,
        ))
    }

    async fn publish_lesson_content(
        &self,
        request: Request<PublishLessonContentRequest>,
    ) -> Result<Response<LessonContent>, Status> {
        let by = caller(&request)?.sub.clone();
        let lesson_id = request.get_ref().lesson_id.clone();
        let access = self.editable(&request, &lesson_id).await?;
        Ok(Response::new(
            self.publish(&lesson_id, &access.course_id, &by).await?,
        ))
    }

    async fn upload_media(
        &self,
        request: Request<UploadMediaRequest>,
    ) -> Result<Response<Media>, Status> {
        let by = caller(&request)?.sub.clone();
        let lesson_id = request.get_ref().lesson_id.clone();
        self.editable(&request, &lesson_id).await?;
        let body = request.into_inner();
        let file = body.file.unwrap_or_default();
        Ok(Response::new(
            self.store_media(
                &lesson_id,
                &body.filename,
                &file.content_type,
                Bytes::from(file.data),
                &by,
            )
            .await?,
        ))
    }

    async fn get_media(
        &self,
        request: Request<GetMediaRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let id = request.get_ref().id.clone();
        let media = self
            .store
            .media(&id)
            .await?
            .ok_or_else(|| Error::not_found(format!("media {id}")))?;
        let access = self.readable(&request, &media.lesson_id).await?;
        let data = self
            .media
            .get(&ObjectPath::from(media.object_key.as_str()))
            .await
            .map_err(|e| Error::internal("reading media", &e))?
            .bytes()
            .await
            .map_err(|e| Error::internal("reading media", &e))?;
        let body = HttpBody {
            content_type: media.content_type.clone(),
            data: data.to_vec(),
            extensions: Vec::new(),
        };
        Ok(cacheable(
            body,
            media.sha256.clone(),
            published_policy(&access),
            &tags(&access, None),
        ))
    }
}
