//! The gRPC handlers: each decodes the request, checks what the caller may do with the
//! lesson (the course service decides), calls one domain function of [`Contents`], and
//! says how the answer may be cached (`etag`, `cache-control`, cache tags for the
//! gateway's edge cache).

use bytes::Bytes;
use duovarsity_common::Error;
use duovarsity_common::auth::caller;
use duovarsity_common::cache::COURSE_OUTLINE_CACHE;
use duovarsity_common::grpc::http_cacheable;
use duovarsity_proto::content::content_service_server::ContentService;
use duovarsity_proto::content::*;
use duovarsity_proto::course::LessonAccess;
use duovarsity_proto::google::api::HttpBody;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use tonic::{Request, Response, Status};

use crate::convert::version_summary;
use crate::{Contents, LATEST_CACHE};

/// `duovarsity.content.v1.ContentService` over the content domain.
#[derive(Clone)]
pub struct ContentGrpc(pub Contents);

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
impl ContentService for ContentGrpc {
    async fn get_lesson_content(
        &self,
        request: Request<GetLessonContentRequest>,
    ) -> Result<Response<LessonContent>, Status> {
        let lesson_id = request.get_ref().lesson_id.clone();
        let access = self.0.readable(&request, &lesson_id).await?;
        let content = self.0.cached_content(&lesson_id, None).await?;
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
        let access = self.0.readable(&request, &lesson_id).await?;
        let content = self
            .0
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
        self.0.readable(&request, &lesson_id).await?;
        let versions = self.0.store.versions(&lesson_id).await?;
        Ok(Response::new(ListLessonVersionsResponse {
            versions: versions.iter().map(version_summary).collect(),
        }))
    }

    async fn get_lesson_draft(
        &self,
        request: Request<GetLessonDraftRequest>,
    ) -> Result<Response<LessonDraft>, Status> {
        let lesson_id = request.get_ref().lesson_id.clone();
        self.0.editable(&request, &lesson_id).await?;
        let draft = self
            .0
            .store
            .draft(&lesson_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("draft of lesson {lesson_id}")))?;
        let etag = format!("{lesson_id}-d{}", draft.updated_at);
        Ok(cacheable(
            self.0.draft_message(&draft).await?,
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
        self.0.editable(&request, &lesson_id).await?;
        let body = request.into_inner();
        Ok(Response::new(
            self.0
                .save_draft(&lesson_id, &body.markdown, &body.attachment_ids, &by)
                .await?,
        ))
    }

    async fn publish_lesson_content(
        &self,
        request: Request<PublishLessonContentRequest>,
    ) -> Result<Response<LessonContent>, Status> {
        let by = caller(&request)?.sub.clone();
        let lesson_id = request.get_ref().lesson_id.clone();
        let access = self.0.editable(&request, &lesson_id).await?;
        Ok(Response::new(
            self.0
                .publish(&lesson_id, &access.course_id, &access.lesson_title, &by)
                .await?,
        ))
    }

    async fn upload_media(
        &self,
        request: Request<UploadMediaRequest>,
    ) -> Result<Response<Media>, Status> {
        let by = caller(&request)?.sub.clone();
        let lesson_id = request.get_ref().lesson_id.clone();
        self.0.editable(&request, &lesson_id).await?;
        let body = request.into_inner();
        let file = body.file.unwrap_or_default();
        Ok(Response::new(
            self.0
                .store_media(
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
            .0
            .store
            .media(&id)
            .await?
            .ok_or_else(|| Error::not_found(format!("media {id}")))?;
        let access = self.0.readable(&request, &media.lesson_id).await?;
        let data = self
            .0
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
