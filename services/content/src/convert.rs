//! Rows to protobuf: the one place where the content service's rows meet the wire.

use duovarsity_common::time::timestamp_from_millis;
use duovarsity_proto::content::{
    Attachment, LessonContent, LessonDraft, LessonVersionSummary, Media,
};

use crate::store::{DraftRow, MediaRow, VersionRow};

pub fn media_to_proto(media: &MediaRow) -> Media {
    Media {
        id: media.id.clone(),
        lesson_id: media.lesson_id.clone(),
        filename: media.filename.clone(),
        content_type: media.content_type.clone(),
        size_bytes: media.size_bytes,
        sha256: media.sha256.clone(),
        url: format!("/v1/media/{}", media.id),
        created_at: Some(timestamp_from_millis(media.created_at)),
    }
}

pub fn attachment_to_proto(media: &MediaRow) -> Attachment {
    Attachment {
        media_id: media.id.clone(),
        filename: media.filename.clone(),
        content_type: media.content_type.clone(),
        size_bytes: media.size_bytes,
        url: format!("/v1/media/{}", media.id),
    }
}

/// A published version, with its attachments (those that still exist).
pub fn content_to_proto(version: &VersionRow, attachments: Vec<Attachment>) -> LessonContent {
    LessonContent {
        lesson_id: version.lesson_id.clone(),
        course_id: version.course_id.clone(),
        version: i32::try_from(version.version).unwrap_or(i32::MAX),
        markdown: version.markdown.clone(),
        attachments,
        published_at: Some(timestamp_from_millis(version.published_at)),
    }
}

/// A draft, with its attachments and the number of the lesson's latest published version
/// (0: none).
pub fn draft_to_proto(
    draft: &DraftRow,
    attachments: Vec<Attachment>,
    published_version: i64,
) -> LessonDraft {
    LessonDraft {
        lesson_id: draft.lesson_id.clone(),
        markdown: draft.markdown.clone(),
        attachments,
        published_version: i32::try_from(published_version).unwrap_or(i32::MAX),
        updated_at: Some(timestamp_from_millis(draft.updated_at)),
    }
}

pub fn version_summary(version: &VersionRow) -> LessonVersionSummary {
    LessonVersionSummary {
        version: i32::try_from(version.version).unwrap_or(i32::MAX),
        published_at: Some(timestamp_from_millis(version.published_at)),
        published_by: version.published_by.clone(),
    }
}

/// The most Markdown a `lesson.published` event carries (64 KiB); the rest is read with
/// GetLessonVersion.
pub const MAX_EVENT_TEXT: usize = 64 * 1024;

/// The `lesson.published` event of a new version, its text cut at [`MAX_EVENT_TEXT`] on a
/// character boundary.
pub fn lesson_published_event(
    version: &VersionRow,
    title: &str,
) -> duovarsity_common::events::PendingEvent {
    let mut end = version.markdown.len().min(MAX_EVENT_TEXT);
    while !version.markdown.is_char_boundary(end) {
        end -= 1;
    }
    duovarsity_common::events::pending_event(
        &version.lesson_id,
        &duovarsity_proto::events::LessonPublished {
            lesson_id: version.lesson_id.clone(),
            course_id: version.course_id.clone(),
            title: title.to_string(),
            version: i32::try_from(version.version).unwrap_or(i32::MAX),
            markdown: version.markdown[..end].to_string(),
            truncated: end < version.markdown.len(),
        },
    )
}
