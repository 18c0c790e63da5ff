//! The user service's SQL: accounts and refresh-token families. One implementation over
//! sqlx `Any` serves SQLite and PostgreSQL; `tests/store.rs` runs one suite against both.
//!
//! Reads that feed a response right after a write of the same caller (login, refresh,
//! GetMe) use the primary; listings use the reader, which may be a replica.

use async_trait::async_trait;
use duovarsity_common::Error;
use duovarsity_common::db::{Database, Migrations};
use duovarsity_common::events::PendingEvent;
use duovarsity_common::events::outbox::Outbox;
use duovarsity_common::telemetry::spans;
use sqlx::Row;
use sqlx::any::AnyRow;
use tracing::Instrument as _;

pub mod flags;
mod tokens;

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub display_name: String,
    pub locale: String,
    pub time_zone: String,
    pub role: String,
    pub tier: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Profile fields to change; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct ProfilePatch {
    pub display_name: Option<String>,
    pub locale: Option<String>,
    pub time_zone: Option<String>,
}

/// A refresh token as stored (its hash, never the token).
#[derive(Debug, Clone)]
pub struct RefreshTokenRecord {
    pub token_hash: String,
    pub family_id: String,
    pub user_id: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was current; its successor is stored. Carries the user id.
    Rotated { user_id: String },
    /// The token was already rotated: its family is now revoked.
    Reused,
    /// Unknown, expired, or revoked before.
    Invalid,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Stores a new account and, in the same transaction, its event; ALREADY_EXISTS when
    /// the email is taken (and then no event is written).
    async fn insert_user(
        &self,
        user: &UserRecord,
        event: Option<&PendingEvent>,
    ) -> Result<(), Error>;
    /// Stores many new accounts with their events in one transaction, skipping emails that
    /// are taken (and their events); returns how many were stored.
    async fn insert_users(&self, users: &[(UserRecord, PendingEvent)]) -> Result<usize, Error>;
    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, Error>;
    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, Error>;
    /// Applies the patch and, in the same transaction, the event `changed` makes of the
    /// account after it; NOT_FOUND for an unknown id.
    async fn update_profile(
        &self,
        id: &str,
        patch: &ProfilePatch,
        now: i64,
        changed: for<'u> fn(&'u UserRecord) -> PendingEvent,
    ) -> Result<UserRecord, Error>;
    async fn set_role(&self, id: &str, role: &str, now: i64) -> Result<UserRecord, Error>;
    async fn set_tier(&self, id: &str, tier: &str, now: i64) -> Result<UserRecord, Error>;
    /// Up to `limit` accounts with ids greater than `after`, in id (creation) order.
    async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<Vec<UserRecord>, Error>;
    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), Error>;
    /// Atomically checks `presented_hash` and replaces it with `successor` (whose
    /// `family_id` and `user_id` are taken from the presented token).
    async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        successor: RefreshTokenRecord,
        now: i64,
    ) -> Result<Rotation, Error>;
    /// Revokes the family of `token_hash`; false when the token is unknown.
    async fn revoke_family(&self, token_hash: &str, now: i64) -> Result<bool, Error>;
}

/// The schema, per backend.
pub fn migrations() -> Migrations {
    Migrations::portable(sqlx::migrate!("./migrations"))
        .with_outbox(OUTBOX_TABLE, 1002)
        .with_applied_events(PROCESSED_TABLE, 1004)
}

/// Events the user service has applied (settings reloads for the audit trail).
pub const PROCESSED_TABLE: &str = "user_processed_events";

pub struct SqlUserStore {
    db: Database,
    outbox: Outbox,
}

/// The user service's outbox table.
pub const OUTBOX_TABLE: &str = "user_outbox";

impl SqlUserStore {
    pub fn new(db: Database) -> Self {
        Self {
            db,
            outbox: Outbox::new(OUTBOX_TABLE),
        }
    }

    /// The outbox that [`UserStore::insert_user`] writes to (its relay publishes it).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }
}

const USER_COLUMNS: &str =
    "id, email, password_hash, display_name, locale, time_zone, role, tier, created_at, updated_at";

fn user_from_row(row: &AnyRow) -> Result<UserRecord, sqlx::Error> {
    Ok(UserRecord {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        display_name: row.try_get("display_name")?,
        locale: row.try_get("locale")?,
        time_zone: row.try_get("time_zone")?,
        role: row.try_get("role")?,
        tier: row.try_get("tier")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl SqlUserStore {
    async fn fetch_user(&self, id: &str) -> Result<UserRecord, Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.db.writer())
            .await?;
        match row {
            Some(row) => Ok(user_from_row(&row)?),
            None => Err(Error::not_found(format!("user {id}"))),
        }
    }

    async fn update_column(
        &self,
        id: &str,
        column: &'static str,
        value: &str,
        now: i64,
    ) -> Result<UserRecord, Error> {
        let sql = format!("UPDATE users SET {column} = $1, updated_at = $2 WHERE id = $3");
        let done = sqlx::query(&sql)
            .bind(value)
            .bind(now)
            .bind(id)
            .execute(self.db.writer())
            .await?;
        self.updated(id, done.rows_affected()).await
    }

    /// The account an UPDATE of `affected` rows changed: NOT_FOUND when there was none.
    async fn updated(&self, id: &str, affected: u64) -> Result<UserRecord, Error> {
        if affected == 0 {
            return Err(Error::not_found(format!("user {id}")));
        }
        self.fetch_user(id).await
    }
}

/// Binds `user`'s fields in [`USER_COLUMNS`] order.
fn bind_user<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    user: &'q UserRecord,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(&user.display_name)
        .bind(&user.locale)
        .bind(&user.time_zone)
        .bind(&user.role)
        .bind(&user.tier)
        .bind(user.created_at)
        .bind(user.updated_at)
}

#[async_trait]
impl UserStore for SqlUserStore {
    async fn insert_user(
        &self,
        user: &UserRecord,
        event: Option<&PendingEvent>,
    ) -> Result<(), Error> {
        let mut tx = self.db.writer().begin().await?;
        let sql = format!(
            "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        let span = spans::db_statement(&spans::db_system(&tx), "INSERT", "users");
        let result = bind_user(sqlx::query(&sql), user)
            .execute(&mut *tx)
            .instrument(span)
            .await;
        match result {
            Ok(_) => {
                if let Some(event) = event {
                    self.outbox.enqueue_event(&mut tx, event).await?;
                }
                tx.commit().await?;
                self.outbox.wake();
                Ok(())
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(Error::AlreadyExists {
                reason: "EMAIL_TAKEN",
                message: "an account with this email already exists".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    async fn insert_users(&self, users: &[(UserRecord, PendingEvent)]) -> Result<usize, Error> {
        let mut tx = self.db.writer().begin().await?;
        let sql = format!(
            "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (email) DO NOTHING"
        );
        let mut stored = 0;
        for (user, event) in users {
            let inserted = bind_user(sqlx::query(&sql), user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted == 1 {
                self.outbox.enqueue_event(&mut tx, event).await?;
                stored += 1;
            }
        }
        tx.commit().await?;
        self.outbox.wake();
        Ok(stored)
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1");
        let row = sqlx::query(&sql)
            .bind(email)
            .fetch_optional(self.db.writer())
            .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<UserRecord>, Error> {
        match self.fetch_user(id).await {
            Ok(user) => Ok(Some(user)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn update_profile(
        &self,
        id: &str,
        patch: &ProfilePatch,
        now: i64,
        changed: for<'u> fn(&'u UserRecord) -> PendingEvent,
    ) -> Result<UserRecord, Error> {
        let mut tx = self.db.writer().begin().await?;
        let sql = format!(
            "UPDATE users SET display_name = COALESCE($1, display_name), \
             locale = COALESCE($2, locale), time_zone = COALESCE($3, time_zone), \
             updated_at = $4 WHERE id = $5 RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(patch.display_name.as_deref())
            .bind(patch.locale.as_deref())
            .bind(patch.time_zone.as_deref())
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let user = match row {
            Some(row) => user_from_row(&row)?,
            None => return Err(Error::not_found(format!("user {id}"))),
        };
        self.outbox.enqueue_event(&mut tx, &changed(&user)).await?;
        tx.commit().await?;
        self.outbox.wake();
        Ok(user)
    }

    async fn set_role(&self, id: &str, role: &str, now: i64) -> Result<UserRecord, Error> {
        self.update_column(id, "role", role, now).await
    }

    async fn set_tier(&self, id: &str, tier: &str, now: i64) -> Result<UserRecord, Error> {
        self.update_column(id, "tier", tier, now).await
    }

    async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<Vec<UserRecord>, Error> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2");
        let rows = sqlx::query(&sql)
            .bind(after.unwrap_or(""))
            .bind(i64::from(limit))
            .fetch_all(self.db.reader())
            .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    async fn insert_refresh_token(&self, token: &RefreshTokenRecord) -> Result<(), Error> {
        self.insert_token(token).await
    }

    async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        successor: RefreshTokenRecord,
        now: i64,
    ) -> Result<Rotation, Error> {
        self.rotate_token(presented_hash, successor, now).await
    }

    async fn revoke_family(&self, token_hash: &str, now: i64) -> Result<bool, Error> {
        self.revoke_token_family(token_hash, now).await
    }
}
