//! Refresh-token families: a token is inserted at sign-in, claimed once at rotation (its
//! successor joins the family in the same transaction), and a second claim or a logout
//! revokes the whole family.

use duovarsity_common::Error;
use sqlx::Row;
use sqlx::any::AnyArguments;

use super::{RefreshTokenRecord, Rotation, SqlUserStore};

fn insert(token: &RefreshTokenRecord) -> sqlx::query::Query<'_, sqlx::Any, AnyArguments<'_>> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, issued_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&token.token_hash)
    .bind(&token.family_id)
    .bind(&token.user_id)
    .bind(token.issued_at)
    .bind(token.expires_at)
}

impl SqlUserStore {
    pub(super) async fn insert_token(&self, token: &RefreshTokenRecord) -> Result<(), Error> {
        insert(token).execute(self.db.writer()).await?;
        Ok(())
    }

    pub(super) async fn rotate_token(
        &self,
        presented_hash: &str,
        successor: RefreshTokenRecord,
        now: i64,
    ) -> Result<Rotation, Error> {
        let mut tx = self.db.writer().begin().await?;
        let row = sqlx::query(
            "SELECT family_id, user_id, expires_at, rotated_at, revoked_at \
             FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(presented_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Rotation::Invalid);
        };
        let family_id: String = row.try_get("family_id")?;
        let user_id: String = row.try_get("user_id")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        let rotated_at: Option<i64> = row.try_get("rotated_at")?;
        let revoked_at: Option<i64> = row.try_get("revoked_at")?;
        if revoked_at.is_some() || expires_at <= now {
            return Ok(Rotation::Invalid);
        }
        // Claim the token: only one presenter can move it from current to rotated. A second
        // (concurrent or later) presenter is treated as theft of the family.
        let claimed = rotated_at.is_none()
            && sqlx::query(
                "UPDATE refresh_tokens SET rotated_at = $1 \
                 WHERE token_hash = $2 AND rotated_at IS NULL AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(presented_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
        if !claimed {
            sqlx::query("UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
                .bind(now)
                .bind(&family_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Rotation::Reused);
        }
        let successor = RefreshTokenRecord {
            family_id,
            user_id: user_id.clone(),
            ..successor
        };
        insert(&successor).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Rotation::Rotated { user_id })
    }

    pub(super) async fn revoke_token_family(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE revoked_at IS NULL AND family_id = \
             (SELECT family_id FROM refresh_tokens WHERE token_hash = $2)",
        )
        .bind(now)
        .bind(token_hash)
        .execute(self.db.writer())
        .await?;
        if done.rows_affected() > 0 {
            return Ok(true);
        }
        let known = sqlx::query("SELECT 1 AS known FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(self.db.writer())
            .await?;
        Ok(known.is_some())
    }
}
