//! The content service's SQL (drafts, versions, media records) over sqlx `Any`.
//!
//! Publishing is one transaction: the next version number is read and the version inserted
//! together, and the primary key (lesson_id, version) makes a concurrent publish fail
//! rather than overwrite.

use duovarsity_common::Error;
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::events::PendingEvent;
use duovarsity_common::events::outbox::Outbox;
use sqlx::Row;
use sqlx::any::AnyRow;

/// The content service's outbox (`lesson.published`).
pub const OUTBOX_TABLE: &str = "content_outbox";

pub fn migrations() -> Migrations {
    Migrations::portable(sqlx::migrate!("./migrations")).with_outbox(OUTBOX_TABLE, 3002)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftRow {
    pub lesson_id: String,
    pub markdown: String,
    pub attachment_ids: Vec<String>,
    pub updated_at: i64,
    pub updated_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRow {
    pub lesson_id: String,
    pub version: i64,
    pub course_id: String,
    pub markdown: String,
    pub attachment_ids: Vec<String>,
    pub published_at: i64,
    pub published_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRow {
    pub id: String,
    pub lesson_id: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub object_key: String,
    pub created_at: i64,
    pub created_by: String,
}

pub struct ContentStore {
    db: Database,
    outbox: Outbox,
}

fn ids(text: &str) -> Vec<String> {
    text.split(',')
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect()
}

fn version_from_row(row: &AnyRow) -> Result<VersionRow, sqlx::Error> {
    Ok(VersionRow {
        lesson_id: row.try_get("lesson_id")?,
        version: row.try_get("version")?,
        course_id: row.try_get("course_id")?,
        markdown: row.try_get("markdown")?,
        attachment_ids: ids(&row.try_get::<String, _>("attachment_ids")?),
        published_at: row.try_get("published_at")?,
        published_by: row.try_get("published_by")?,
    })
}

fn media_from_row(row: &AnyRow) -> Result<MediaRow, sqlx::Error> {
    Ok(MediaRow {
        id: row.try_get("id")?,
        lesson_id: row.try_get("lesson_id")?,
        filename: row.try_get("filename")?,
        content_type: row.try_get("content_type")?,
        size_bytes: row.try_get("size_bytes")?,
        sha256: row.try_get("sha256")?,
        object_key: row.try_get("object_key")?,
        created_at: row.try_get("created_at")?,
        created_by: row.try_get("created_by")?,
    })
}

const VERSION_COLUMNS: &str =
    "lesson_id, version, course_id, markdown, attachment_ids, published_at, published_by";
const MEDIA_COLUMNS: &str =
    "id, lesson_id, filename, content_type, size_bytes, sha256, object_key, created_at, created_by";

impl ContentStore {
    pub fn new(db: Database) -> Self {
        Self {
            db,
            outbox: Outbox::new(OUTBOX_TABLE),
        }
    }

    /// The outbox [`ContentStore::publish`] writes to (its relay publishes it).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub async fn save_draft(&self, draft: &DraftRow) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO lesson_drafts (lesson_id, markdown, attachment_ids, updated_at, updated_by) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (lesson_id) DO UPDATE SET markdown = excluded.markdown, attachment_ids = excluded.attachment_ids, \
             updated_at = excluded.updated_at, updated_by = excluded.updated_by",
        )
        .bind(&draft.lesson_id)
        .bind(&draft.markdown)
        .bind(draft.attachment_ids.join(","))
        .bind(draft.updated_at)
        .bind(&draft.updated_by)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    pub async fn draft(&self, lesson_id: &str) -> Result<Option<DraftRow>, Error> {
        let row = sqlx::query("SELECT lesson_id, markdown, attachment_ids, updated_at, updated_by FROM lesson_drafts WHERE lesson_id = $1")
            .bind(lesson_id)
            .fetch_optional(self.db.writer())
            .await?;
        Ok(match row {
            Some(row) => Some(DraftRow {
                lesson_id: row.try_get("lesson_id")?,
                markdown: row.try_get("markdown")?,
                attachment_ids: ids(&row.try_get::<String, _>("attachment_ids")?),
                updated_at: row.try_get("updated_at")?,
                updated_by: row.try_get("updated_by")?,
            }),
            None => None,
        })
    }

    /// Publishes the draft of `lesson_id` as the next version.
    pub async fn publish(
        &self,
        draft: &DraftRow,
        course_id: &str,
        now: i64,
        by: &str,
        event: impl FnOnce(&VersionRow) -> PendingEvent,
    ) -> Result<VersionRow, Error> {
        // One statement numbers and inserts the version: the transaction's first statement
        // is a write, so on SQLite it waits for the write lock instead of failing to
        // upgrade a read once the outbox relay (another writer) has committed.
        let mut tx = self.db.writer().begin().await?;
        let next: i64 = sqlx::query(&format!(
            "INSERT INTO lesson_versions ({VERSION_COLUMNS}) \
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2, $3, $4, $5, $6 \
             FROM lesson_versions WHERE lesson_id = $1 RETURNING version"
        ))
        .bind(&draft.lesson_id)
        .bind(course_id)
        .bind(&draft.markdown)
        .bind(draft.attachment_ids.join(","))
        .bind(now)
        .bind(by)
        .fetch_one(&mut *tx)
        .await?
        .try_get("version")?;
        let version = VersionRow {
            lesson_id: draft.lesson_id.clone(),
            version: next,
            course_id: course_id.to_string(),
            markdown: draft.markdown.clone(),
            attachment_ids: draft.attachment_ids.clone(),
            published_at: now,
            published_by: by.to_string(),
        };
        self.outbox.enqueue_event(&mut tx, &event(&version)).await?;
        tx.commit().await?;
        self.outbox.wake();
        Ok(version)
    }

    /// A version, or the latest when `version` is `None`.
    pub async fn version(
        &self,
        lesson_id: &str,
        version: Option<i64>,
    ) -> Result<Option<VersionRow>, Error> {
        let row = match version {
            Some(number) => {
                sqlx::query(&format!("SELECT {VERSION_COLUMNS} FROM lesson_versions WHERE lesson_id = $1 AND version = $2"))
                    .bind(lesson_id)
                    .bind(number)
                    .fetch_optional(self.db.reader())
                    .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {VERSION_COLUMNS} FROM lesson_versions WHERE lesson_id = $1 ORDER BY version DESC LIMIT 1"
                ))
                .bind(lesson_id)
                .fetch_optional(self.db.writer())
                .await?
            }
        };
        Ok(row.as_ref().map(version_from_row).transpose()?)
    }

    pub async fn versions(&self, lesson_id: &str) -> Result<Vec<VersionRow>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM lesson_versions WHERE lesson_id = $1 ORDER BY version"
        ))
        .bind(lesson_id)
        .fetch_all(self.db.reader())
        .await?;
        Ok(rows
            .iter()
            .map(version_from_row)
            .collect::<Result<_, _>>()?)
    }

    pub async fn insert_media(&self, media: &MediaRow) -> Result<(), Error> {
        sqlx::query(&format!(
            "INSERT INTO media ({MEDIA_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&media.id)
        .bind(&media.lesson_id)
        .bind(&media.filename)
        .bind(&media.content_type)
        .bind(media.size_bytes)
        .bind(&media.sha256)
        .bind(&media.object_key)
        .bind(media.created_at)
        .bind(&media.created_by)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    pub async fn media(&self, id: &str) -> Result<Option<MediaRow>, Error> {
        let row = sqlx::query(&format!("SELECT {MEDIA_COLUMNS} FROM media WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.db.writer())
            .await?;
        Ok(row.as_ref().map(media_from_row).transpose()?)
    }
}
