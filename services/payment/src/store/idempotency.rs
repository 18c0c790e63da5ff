//! Idempotency keys: claimed with `INSERT … ON CONFLICT DO NOTHING` on the primary key,
//! which SQLite and PostgreSQL decide atomically, across replicas.

use duovarsity_common::Error;
use duovarsity_common::db::Database;
use sqlx::Row;

/// What a key holds: the fingerprint of the request that claimed it, and its answer once
/// there is one.
pub struct StoredKey {
    pub fingerprint: String,
    pub response: Option<Vec<u8>>,
}

/// Claims `key` in `scope` at `now` for a request with `fingerprint`, after forgetting a
/// claim made before `expired_before`. `None`: this request is the first. Otherwise what
/// the key holds (`Some(None)`: released between the insert and the read).
pub async fn claim(
    db: &Database,
    scope: &str,
    key: &str,
    fingerprint: &str,
    now: i64,
    expired_before: i64,
) -> Result<Option<Option<StoredKey>>, Error> {
    let mut tx = db.writer().begin().await?;
    sqlx::query(
        "DELETE FROM payment_idempotency WHERE scope = $1 AND idempotency_key = $2 AND created_at < $3",
    )
    .bind(scope)
    .bind(key)
    .bind(expired_before)
    .execute(&mut *tx)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO payment_idempotency (scope, idempotency_key, fingerprint, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (scope, idempotency_key) DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(fingerprint)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let existing = if inserted == 1 {
        None
    } else {
        let row = sqlx::query(
            "SELECT fingerprint, response FROM payment_idempotency \
             WHERE scope = $1 AND idempotency_key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        Some(match row {
            Some(row) => Some(StoredKey {
                fingerprint: row.try_get("fingerprint")?,
                response: row.try_get("response")?,
            }),
            None => None,
        })
    };
    tx.commit().await?;
    Ok(existing)
}

/// Stores the answer of the request that claimed `key`.
pub async fn complete(db: &Database, scope: &str, key: &str, response: &[u8]) -> Result<(), Error> {
    sqlx::query(
        "UPDATE payment_idempotency SET response = $1 WHERE scope = $2 AND idempotency_key = $3",
    )
    .bind(response.to_vec())
    .bind(scope)
    .bind(key)
    .execute(db.writer())
    .await?;
    Ok(())
}

/// Forgets a claim that has no answer.
pub async fn release(db: &Database, scope: &str, key: &str) -> Result<(), Error> {
    sqlx::query(
        "DELETE FROM payment_idempotency WHERE scope = $1 AND idempotency_key = $2 AND response IS NULL",
    )
    .bind(scope)
    .bind(key)
    .execute(db.writer())
    .await?;
    Ok(())
}
