//! Lesson media: the allow-list of types, the checks that the bytes are what they claim,
//! and the object store (a local directory or an S3-compatible bucket) that keeps them.

use std::sync::Arc;

use bytes::Bytes;
use duovarsity_common::Error;
use duovarsity_common::time::now_millis;
use duovarsity_proto::content::*;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::convert;
use crate::store::MediaRow;
use crate::{Contents, StartError};

/// Media types accepted for upload. SVG and HTML are left out on purpose: served from our
/// origin they could run script.
pub const ALLOWED_MEDIA_TYPES: [&str; 11] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "video/mp4",
    "video/webm",
    "audio/mpeg",
    "audio/ogg",
    "application/pdf",
    "text/plain",
    "text/markdown",
];

/// `file:///abs/dir` (created if missing) or an object store URL such as `s3://bucket/prefix`
/// (credentials and endpoint from `AWS_*` variables, overridden by `options`).
pub(crate) fn open_object_store(
    url: &str,
    options: Vec<(String, String)>,
) -> Result<Arc<dyn ObjectStore>, StartError> {
    if let Some(path) = url.strip_prefix("file://") {
        std::fs::create_dir_all(path).map_err(|e| StartError::Media(format!("{path}: {e}")))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(path)
            .map_err(|e| StartError::Media(e.to_string()))?;
        return Ok(Arc::new(store));
    }
    let parsed = url::Url::parse(url).map_err(|e| StartError::Media(e.to_string()))?;
    let mut merged: Vec<(String, String)> = std::env::vars()
        .filter(|(key, _)| key.starts_with("AWS_"))
        .map(|(key, value)| (key.to_lowercase(), value))
        .filter(|(key, _)| !options.iter().any(|(k, _)| k == key))
        .collect();
    merged.extend(options);
    let options = merged;
    let (store, prefix) = object_store::parse_url_opts(&parsed, options)
        .map_err(|e| StartError::Media(e.to_string()))?;
    Ok(Arc::new(object_store::prefix::PrefixStore::new(
        store, prefix,
    )))
}

impl Contents {
    /// Stores one media file; the content type must be allowed and match the bytes.
    pub async fn store_media(
        &self,
        lesson_id: &str,
        filename: &str,
        content_type: &str,
        data: Bytes,
        by: &str,
    ) -> Result<Media, Error> {
        let content_type = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if data.is_empty() {
            return Err(Error::invalid("file", "is empty"));
        }
        if data.len() > self.media_max_bytes {
            return Err(Error::invalid(
                "file",
                format!("is larger than {} bytes", self.media_max_bytes),
            ));
        }
        if !ALLOWED_MEDIA_TYPES.contains(&content_type.as_str()) {
            return Err(Error::invalid(
                "file.content_type",
                format!(
                    "{content_type:?} is not accepted; use one of {}",
                    ALLOWED_MEDIA_TYPES.join(", ")
                ),
            ));
        }
        if let Some(detected) = infer::get(&data)
            && detected.mime_type() != content_type
            && !(content_type.starts_with("text/")
                && detected.matcher_type() == infer::MatcherType::Text)
        {
            return Err(Error::invalid(
                "file.content_type",
                format!("the bytes are {}, not {content_type}", detected.mime_type()),
            ));
        }
        let filename = filename.trim();
        if filename.is_empty()
            || filename.len() > 200
            || filename.contains(['/', '\\'])
            || filename.chars().any(char::is_control)
        {
            return Err(Error::invalid(
                "filename",
                "must be 1-200 characters without slashes",
            ));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let object_key = format!("lessons/{lesson_id}/{id}");
        let sha256 = duovarsity_common::digest::sha256_hex(&data);
        let size = data.len() as i64;
        self.media
            .put(&ObjectPath::from(object_key.as_str()), data.into())
            .await
            .map_err(|e| Error::internal("writing media", &e))?;
        let row = MediaRow {
            id,
            lesson_id: lesson_id.to_string(),
            filename: filename.to_string(),
            content_type,
            size_bytes: size,
            sha256,
            object_key,
            created_at: now_millis(),
            created_by: by.to_string(),
        };
        self.store.insert_media(&row).await?;
        Ok(convert::media_to_proto(&row))
    }
}
