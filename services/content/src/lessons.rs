//! Lesson content: drafts, published immutable versions (read through the caches), and
//! their attachments.

use bytes::Bytes;
use duovarsity_common::Error;
use duovarsity_common::time::now_millis;
use duovarsity_proto::content::*;
use prost::Message;

use crate::convert::{
    attachment_to_proto, content_to_proto, draft_to_proto, lesson_published_event,
};
use crate::store::{DraftRow, VersionRow};
use crate::{Contents, MAX_ATTACHMENTS, MAX_MARKDOWN_BYTES};

impl Contents {
    pub(crate) async fn attachments(&self, ids: &[String]) -> Result<Vec<Attachment>, Error> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(media) = self.store.media(id).await? {
                out.push(attachment_to_proto(&media));
            }
        }
        Ok(out)
    }

    pub(crate) async fn content(&self, version: &VersionRow) -> Result<LessonContent, Error> {
        let attachments = self.attachments(&version.attachment_ids).await?;
        Ok(content_to_proto(version, attachments))
    }

    /// A published version (latest when `number` is None) through its cache.
    pub(crate) async fn cached_content(
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
        title: &str,
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
            .publish(&draft, course_id, now_millis(), by, |version| {
                lesson_published_event(version, title)
            })
            .await?;
        self.latest.invalidate(lesson_id).await;
        self.content(&version).await
    }

    pub(crate) async fn draft_message(&self, draft: &DraftRow) -> Result<LessonDraft, Error> {
        let published = self
            .store
            .version(&draft.lesson_id, None)
            .await?
            .map_or(0, |v| v.version);
        let attachments = self.attachments(&draft.attachment_ids).await?;
        Ok(draft_to_proto(draft, attachments, published))
    }
}
