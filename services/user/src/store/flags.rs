//! Feature flags and their audit trail. A write and its change row commit together, so
//! the history never misses a change and never shows one that did not happen.

use duovarsity_common::Error;
use duovarsity_common::db::Database;
use sqlx::Row;

/// A stored flag: its flagd definition as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagRecord {
    pub key: String,
    pub definition: String,
    pub updated_at: i64,
    pub updated_by: String,
}

/// One change in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagChangeRecord {
    pub id: String,
    pub key: String,
    pub actor: String,
    pub source: String,
    pub checksum: String,
    pub previous: Option<String>,
    pub definition: Option<String>,
    pub changed_at: i64,
}

/// Who makes a change and from where.
#[derive(Debug, Clone)]
pub struct Author<'a> {
    pub actor: &'a str,
    pub source: &'a str,
    pub checksum: &'a str,
}

#[derive(Clone)]
pub struct FlagStore {
    db: Database,
}

fn flag_from_row(row: &sqlx::any::AnyRow) -> Result<FlagRecord, sqlx::Error> {
    Ok(FlagRecord {
        key: row.try_get("key")?,
        definition: row.try_get("definition")?,
        updated_at: row.try_get("updated_at")?,
        updated_by: row.try_get("updated_by")?,
    })
}

impl FlagStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Every flag, by key, from the primary (what the owner publishes must be current).
    pub async fn all(&self) -> Result<Vec<FlagRecord>, Error> {
        let rows =
            sqlx::query("SELECT key, definition, updated_at, updated_by FROM flags ORDER BY key")
                .fetch_all(self.db.writer())
                .await?;
        Ok(rows.iter().map(flag_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn get(&self, key: &str) -> Result<Option<FlagRecord>, Error> {
        let row =
            sqlx::query("SELECT key, definition, updated_at, updated_by FROM flags WHERE key = $1")
                .bind(key)
                .fetch_optional(self.db.writer())
                .await?;
        Ok(row.as_ref().map(flag_from_row).transpose()?)
    }

    /// How many flags there are.
    pub async fn count(&self) -> Result<usize, Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM flags")
            .fetch_one(self.db.writer())
            .await?;
        Ok(usize::try_from(row.try_get::<i64, _>("n")?).unwrap_or(usize::MAX))
    }

    /// The version of the flag set: the time of the last change (0 before any).
    pub async fn version(&self) -> Result<i64, Error> {
        let row = sqlx::query("SELECT MAX(changed_at) AS version FROM flag_changes")
            .fetch_one(self.db.writer())
            .await?;
        Ok(row.try_get::<Option<i64>, _>("version")?.unwrap_or(0))
    }

    /// Writes (`Some`) or deletes (`None`) a flag with its change row, in one transaction.
    /// Returns false, writing nothing, when the flag already has exactly that definition
    /// (or, for a delete, does not exist).
    pub async fn change(
        &self,
        key: &str,
        definition: Option<&str>,
        author: &Author<'_>,
        now: i64,
    ) -> Result<bool, Error> {
        let mut tx = self.db.writer().begin().await?;
        let previous: Option<String> = sqlx::query("SELECT definition FROM flags WHERE key = $1")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.try_get("definition"))
            .transpose()?;
        if previous.as_deref() == definition {
            return Ok(false);
        }
        match definition {
            Some(definition) => {
                sqlx::query(
                    "INSERT INTO flags (key, definition, updated_at, updated_by) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (key) DO UPDATE SET definition = excluded.definition, \
                     updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                )
                .bind(key)
                .bind(definition)
                .bind(now)
                .bind(author.actor)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM flags WHERE key = $1")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // The version is the time of the last change: never let it go backwards (a clock
        // step, or two changes in one millisecond on two replicas).
        let last: Option<i64> = sqlx::query("SELECT MAX(changed_at) AS last FROM flag_changes")
            .fetch_one(&mut *tx)
            .await?
            .try_get("last")?;
        let changed_at = last.map_or(now, |last| now.max(last + 1));
        sqlx::query(
            "INSERT INTO flag_changes (id, key, actor, source, checksum, previous, definition, changed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(key)
        .bind(author.actor)
        .bind(author.source)
        .bind(author.checksum)
        .bind(previous)
        .bind(definition)
        .bind(changed_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Up to `limit` changes of `key` (`None`: of everything), newest first, older than
    /// the change `before`.
    pub async fn history(
        &self,
        key: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<FlagChangeRecord>, Error> {
        let rows = sqlx::query(
            "SELECT id, key, actor, source, checksum, previous, definition, changed_at \
             FROM flag_changes WHERE ($1 = '' OR key = $1) AND ($2 = '' OR id < $2) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(key.unwrap_or(""))
        .bind(before.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(self.db.writer())
        .await?;
        let change = |row: &sqlx::any::AnyRow| -> Result<FlagChangeRecord, sqlx::Error> {
            Ok(FlagChangeRecord {
                id: row.try_get("id")?,
                key: row.try_get("key")?,
                actor: row.try_get("actor")?,
                source: row.try_get("source")?,
                checksum: row.try_get("checksum")?,
                previous: row.try_get("previous")?,
                definition: row.try_get("definition")?,
                changed_at: row.try_get("changed_at")?,
            })
        };
        Ok(rows.iter().map(change).collect::<Result<_, _>>()?)
    }
}

/// Records a change that happened elsewhere (a settings reload) in the caller's
/// transaction; its id is the event's, so a redelivered event adds nothing.
pub async fn record_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    change: &FlagChangeRecord,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO flag_changes (id, key, actor, source, checksum, previous, definition, changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&change.id)
    .bind(&change.key)
    .bind(&change.actor)
    .bind(&change.source)
    .bind(&change.checksum)
    .bind(&change.previous)
    .bind(&change.definition)
    .bind(change.changed_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
