//! Rooms' SQL: announcements (numbered per course), who is enrolled (from enrollment
//! events), and when users were last seen.

use duovarsity_common::Error;
use duovarsity_common::events::PendingEvent;
use duovarsity_common::events::outbox::Outbox;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::NotificationStore;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncementRow {
    pub id: String,
    pub course_id: String,
    pub seq: i64,
    pub author_id: String,
    pub title: String,
    pub body: String,
    pub created_at: i64,
}

const COLUMNS: &str = "id, course_id, seq, author_id, title, body, created_at";

fn from_row(row: &AnyRow) -> Result<AnnouncementRow, sqlx::Error> {
    Ok(AnnouncementRow {
        id: row.try_get("id")?,
        course_id: row.try_get("course_id")?,
        seq: row.try_get("seq")?,
        author_id: row.try_get("author_id")?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        created_at: row.try_get("created_at")?,
    })
}

impl NotificationStore {
    /// Writes an announcement with the course's next sequence number, and the event `make`
    /// builds from it, in one transaction. Two posts that pick the same number collide on
    /// the unique index; the loser tries again, so numbers follow commit order.
    pub async fn post_announcement(
        &self,
        outbox: &Outbox,
        mut row: AnnouncementRow,
        make: impl Fn(&AnnouncementRow) -> PendingEvent,
    ) -> Result<AnnouncementRow, Error> {
        let mut attempts = 0;
        loop {
            let mut tx = self.db.writer().begin().await?;
            let inserted = sqlx::query(&format!(
                "INSERT INTO announcements ({COLUMNS}) VALUES ($1, $2, \
                 (SELECT COALESCE(MAX(seq), 0) + 1 FROM announcements WHERE course_id = $2), $3, $4, $5, $6) \
                 RETURNING seq"
            ))
            .bind(&row.id)
            .bind(&row.course_id)
            .bind(&row.author_id)
            .bind(&row.title)
            .bind(&row.body)
            .bind(row.created_at)
            .fetch_one(&mut *tx)
            .await;
            match inserted {
                Ok(inserted) => row.seq = inserted.try_get("seq")?,
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() && attempts < 5 => {
                    attempts += 1;
                    continue;
                }
                Err(error) => return Err(error.into()),
            }
            outbox.enqueue_event(&mut tx, &make(&row)).await?;
            tx.commit().await?;
            outbox.wake();
            return Ok(row);
        }
    }

    /// The course's announcements after `after_seq`, oldest first, at most `limit`.
    pub async fn announcements_after(
        &self,
        course_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AnnouncementRow>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM announcements WHERE course_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        ))
        .bind(course_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(self.db.writer())
        .await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// How many announcements the course got since `since` (milliseconds), and when the
    /// first of them was.
    pub async fn announcements_since(
        &self,
        course_id: &str,
        since: i64,
    ) -> Result<(i64, Option<i64>), Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(created_at) AS first FROM announcements \
             WHERE course_id = $1 AND created_at > $2",
        )
        .bind(course_id)
        .bind(since)
        .fetch_one(self.db.writer())
        .await?;
        Ok((row.try_get("n")?, row.try_get("first")?))
    }

    /// The course's last announcement number (0: none yet).
    pub async fn last_announcement(&self, course_id: &str) -> Result<i64, Error> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) AS seq FROM announcements WHERE course_id = $1",
        )
        .bind(course_id)
        .fetch_one(self.db.writer())
        .await?;
        Ok(row.try_get("seq")?)
    }

    /// The user's last notification number (0: none yet).
    pub async fn last_notification(&self, user_id: &str) -> Result<i64, Error> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) AS seq FROM notifications WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_one(self.db.writer())
        .await?;
        Ok(row.try_get("seq")?)
    }

    /// Records that `user_id` is enrolled in `course_id` (again: no change).
    pub async fn add_member(
        &self,
        tx: &mut Transaction<'_, Any>,
        course_id: &str,
        user_id: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO course_members (course_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(course_id)
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub async fn remove_member(
        &self,
        tx: &mut Transaction<'_, Any>,
        course_id: &str,
        user_id: &str,
    ) -> Result<(), Error> {
        sqlx::query("DELETE FROM course_members WHERE course_id = $1 AND user_id = $2")
            .bind(course_id)
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Everyone enrolled in the course, in the caller's transaction.
    pub async fn members(
        &self,
        tx: &mut Transaction<'_, Any>,
        course_id: &str,
    ) -> Result<Vec<String>, Error> {
        let rows = sqlx::query("SELECT user_id FROM course_members WHERE course_id = $1")
            .bind(course_id)
            .fetch_all(&mut **tx)
            .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get("user_id"))
            .collect::<Result<_, _>>()?)
    }

    /// Everyone enrolled in the course.
    pub async fn course_members(&self, course_id: &str) -> Result<Vec<String>, Error> {
        let mut tx = self.db.writer().begin().await?;
        let members = self.members(&mut tx, course_id).await?;
        tx.commit().await?;
        Ok(members)
    }

    pub async fn set_last_seen(&self, user_id: &str, at: i64) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO last_seen (user_id, seen_at) VALUES ($1, $2) \
             ON CONFLICT (user_id) DO UPDATE SET seen_at = excluded.seen_at",
        )
        .bind(user_id)
        .bind(at)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    pub async fn last_seen(&self, user_id: &str) -> Result<Option<i64>, Error> {
        let row = sqlx::query("SELECT seen_at FROM last_seen WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(self.db.writer())
            .await?;
        Ok(row.map(|row| row.try_get("seen_at")).transpose()?)
    }
}
