//! The notification service's SQL over sqlx `Any`: notifications, recipients, preferences
//! and the mail outbox.

use duovarsity_common::Error;
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::time::now_millis;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
/// Events this service has applied (the idempotent consumer's table).
pub const PROCESSED_TABLE: &str = "notification_processed_events";
/// The events this service publishes (announcements), before the relay sends them.
pub const OUTBOX_TABLE: &str = "notification_outbox";

pub fn migrations() -> Migrations {
    Migrations::portable(sqlx::migrate!("./migrations"))
        .with_applied_events(PROCESSED_TABLE, 4002)
        .with_outbox(OUTBOX_TABLE, 4005)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationRow {
    pub id: String,
    pub category: String,
    pub title: String,
    pub body: String,
    pub created_at: i64,
    pub read_at: Option<i64>,
    pub seq: i64,
}

const COLUMNS: &str = "id, category, title, body, created_at, read_at, seq";

fn from_row(row: &AnyRow) -> Result<NotificationRow, sqlx::Error> {
    Ok(NotificationRow {
        id: row.try_get("id")?,
        category: row.try_get("category")?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        created_at: row.try_get("created_at")?,
        read_at: row.try_get("read_at")?,
        seq: row.try_get("seq")?,
    })
}

#[derive(Clone)]
pub struct NotificationStore {
    db: Database,
}

impl NotificationStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    pub async fn save_recipient(
        &self,
        tx: &mut Transaction<'_, Any>,
        user_id: &str,
        email: &str,
        name: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO recipients (user_id, email, display_name) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, display_name = excluded.display_name",
        )
        .bind(user_id)
        .bind(email)
        .bind(name)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Writes the in-app notification and the email that `user_id`'s preferences allow.
    /// Account email always goes out (security notices cannot be turned off).
    #[allow(clippy::too_many_arguments)]
    pub async fn notify(
        &self,
        tx: &mut Transaction<'_, Any>,
        user_id: &str,
        category: &str,
        title: &str,
        body: &str,
        wants_email: bool,
        event_id: &str,
    ) -> Result<(), Error> {
        let preference = sqlx::query("SELECT in_app, email FROM notification_preferences WHERE user_id = $1 AND category = $2")
            .bind(user_id)
            .bind(category)
            .fetch_optional(&mut **tx)
            .await?;
        let (in_app, email_on) = match preference {
            Some(row) => (
                row.try_get::<i64, _>("in_app")? != 0,
                row.try_get::<i64, _>("email")? != 0,
            ),
            None => (true, true),
        };
        let now = now_millis();
        if in_app {
            // The next per-user sequence. Two transactions that pick the same number collide
            // on the unique index; the loser fails and the consumer retries it, so numbers
            // follow commit order and a resuming stream never skips one.
            sqlx::query(&format!(
                "INSERT INTO notifications ({COLUMNS}, user_id, event_id) VALUES ($1, $2, $3, $4, $5, NULL, \
                 (SELECT COALESCE(MAX(seq), 0) + 1 FROM notifications WHERE user_id = $6), $6, $7)"
            ))
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(category)
            .bind(title)
            .bind(body)
            .bind(now)
            .bind(user_id)
            .bind(event_id)
            .execute(&mut **tx)
            .await?;
        }
        if wants_email && (email_on || category == "account") {
            let recipient =
                sqlx::query("SELECT email, display_name FROM recipients WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&mut **tx)
                    .await?;
            match recipient {
                Some(row) => {
                    let address: String = row.try_get("email")?;
                    let name: String = row.try_get("display_name")?;
                    sqlx::query(
                        "INSERT INTO mail_outbox (id, recipient, recipient_name, subject, body, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(uuid::Uuid::now_v7().to_string())
                    .bind(address)
                    .bind(name)
                        .bind(title)
                        .bind(body)
                        .bind(now)
                        .execute(&mut **tx)
                        .await?;
                }
                None => tracing::warn!(
                    user_id,
                    "no email address known for this user; mail skipped"
                ),
            }
        }
        Ok(())
    }

    /// Newest first, before the notification id `before`.
    pub async fn list(
        &self,
        user_id: &str,
        before: Option<&str>,
        unread_only: bool,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, Error> {
        let unread = if unread_only {
            " AND read_at IS NULL"
        } else {
            ""
        };
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND ($2 = '' OR id < $2){unread} ORDER BY id DESC LIMIT $3"
        ))
        .bind(user_id)
        .bind(before.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(self.db.writer())
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// The user's notifications with a sequence above `after_seq`, oldest first.
    pub async fn after(
        &self,
        user_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<NotificationRow>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE user_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(user_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(self.db.writer())
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    pub async fn unread_count(&self, user_id: &str) -> Result<i64, Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM notifications WHERE user_id = $1 AND read_at IS NULL",
        )
        .bind(user_id)
        .fetch_one(self.db.writer())
        .await?;
        Ok(row.try_get("n")?)
    }

    pub async fn mark_read(
        &self,
        user_id: &str,
        id: &str,
        now: i64,
    ) -> Result<Option<NotificationRow>, Error> {
        sqlx::query("UPDATE notifications SET read_at = COALESCE(read_at, $1) WHERE id = $2 AND user_id = $3")
            .bind(now)
            .bind(id)
            .bind(user_id)
            .execute(self.db.writer())
            .await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM notifications WHERE id = $1 AND user_id = $2"
        ))
        .bind(id)
        .bind(user_id)
        .fetch_optional(self.db.writer())
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    pub async fn mark_all_read(&self, user_id: &str, now: i64) -> Result<(), Error> {
        sqlx::query("UPDATE notifications SET read_at = $1 WHERE user_id = $2 AND read_at IS NULL")
            .bind(now)
            .bind(user_id)
            .execute(self.db.writer())
            .await?;
        Ok(())
    }

    /// (in-app, email) for a category; both on by default.
    pub async fn preference(&self, user_id: &str, category: &str) -> Result<(bool, bool), Error> {
        let row = sqlx::query("SELECT in_app, email FROM notification_preferences WHERE user_id = $1 AND category = $2")
            .bind(user_id)
            .bind(category)
            .fetch_optional(self.db.writer())
            .await?;
        Ok(match row {
            Some(row) => (
                row.try_get::<i64, _>("in_app")? != 0,
                row.try_get::<i64, _>("email")? != 0,
            ),
            None => (true, true),
        })
    }

    pub async fn set_preference(
        &self,
        user_id: &str,
        category: &str,
        in_app: bool,
        email: bool,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO notification_preferences (user_id, category, in_app, email) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, category) DO UPDATE SET in_app = excluded.in_app, email = excluded.email",
        )
        .bind(user_id)
        .bind(category)
        .bind(i64::from(in_app))
        .bind(i64::from(email))
        .execute(self.db.writer())
        .await?;
        Ok(())
    }
}

/// A message of the mail outbox, claimed by one mailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMail {
    pub id: String,
    pub recipient: String,
    pub recipient_name: String,
    pub subject: String,
    pub body: String,
}

impl NotificationStore {
    /// Claims up to `batch` unsent messages (fewer than `max_attempts` tries, not claimed
    /// by another mailer) until `claimed_until`, in queue order. One atomic UPDATE, whose
    /// conditions PostgreSQL re-checks on rows another replica claimed meanwhile, so each
    /// message goes to one mailer.
    pub async fn claim_mail(
        &self,
        now: i64,
        claimed_until: i64,
        max_attempts: i64,
        batch: i64,
    ) -> Result<Vec<PendingMail>, Error> {
        let rows = sqlx::query(
            "UPDATE mail_outbox SET claimed_until = $1 \
             WHERE id IN (SELECT id FROM mail_outbox WHERE sent_at IS NULL AND attempts < $2 \
                          AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY id LIMIT $4) \
               AND sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < $3) \
             RETURNING id, recipient, recipient_name, subject, body",
        )
        .bind(claimed_until)
        .bind(max_attempts)
        .bind(now)
        .bind(batch)
        .fetch_all(self.db.writer())
        .await?;
        let mut mail = rows
            .iter()
            .map(|row| {
                Ok(PendingMail {
                    id: row.try_get("id")?,
                    recipient: row.try_get("recipient")?,
                    recipient_name: row.try_get("recipient_name")?,
                    subject: row.try_get("subject")?,
                    body: row.try_get("body")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        // In queue order (RETURNING keeps none).
        mail.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(mail)
    }

    pub async fn mail_sent(&self, id: &str, now: i64) -> Result<(), Error> {
        sqlx::query("UPDATE mail_outbox SET sent_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(self.db.writer())
            .await?;
        Ok(())
    }

    /// Counts a failed attempt and frees the message for the next round.
    pub async fn mail_failed(&self, id: &str) -> Result<(), Error> {
        sqlx::query(
            "UPDATE mail_outbox SET attempts = attempts + 1, claimed_until = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }
}

mod rooms;
pub use rooms::AnnouncementRow;
