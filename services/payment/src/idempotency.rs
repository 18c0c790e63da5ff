//! Idempotency keys with Stripe's semantics, for every mutating payment call:
//! - the first request with a key runs and its answer is stored with the key;
//! - the same key with the same request returns the stored answer, without running again;
//! - the same key with a different request is refused (`IDEMPOTENCY_KEY_REUSED`);
//! - a concurrent duplicate waits for the first to finish and gets its answer, so two
//!   requests racing with one key never both run (never a second order);
//! - a first request that failed without effect releases its key, so a retry runs;
//! - keys expire after [`KEY_TTL`]: an old key is a new key.
//!
//! A key belongs to a scope (the caller), so two users' keys never meet. The claim is an
//! `INSERT … ON CONFLICT DO NOTHING` on the primary key, which both SQLite and PostgreSQL
//! decide atomically, across replicas.

use std::time::{Duration, Instant};

use duovarsity_common::Error;
use duovarsity_common::db::Database;
use duovarsity_common::time::now_millis;
use sqlx::Row;

/// How long a key and its stored answer live.
pub const KEY_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a duplicate waits for the first request before giving up (503).
const WAIT_FOR_FIRST: Duration = Duration::from_secs(10);
/// How often a waiting duplicate looks again.
const POLL: Duration = Duration::from_millis(20);

/// What a claimed key says to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request is the first with the key: run it, then [`Idempotency::complete`] (or
    /// [`Idempotency::release`] if it failed without effect).
    First,
    /// The same request already ran: answer with what it answered.
    Replay(Vec<u8>),
}

#[derive(Clone)]
pub struct Idempotency {
    db: Database,
    ttl: Duration,
}

/// A fingerprint of a request: its method and encoded body (SHA-256, hex).
pub fn fingerprint(method: &str, request: &[u8]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(method.as_bytes());
    context.update(&[0]);
    context.update(request);
    hex::encode(context.finish().as_ref())
}

/// A key as clients send it: 1 to 255 visible ASCII characters.
fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::invalid(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(())
}

impl Idempotency {
    pub fn new(db: Database) -> Self {
        Self { db, ttl: KEY_TTL }
    }

    /// Keys expire after `ttl` instead of [`KEY_TTL`] (tests).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Claims `key` in `scope` for a request with `fingerprint`.
    pub async fn claim(&self, scope: &str, key: &str, fingerprint: &str) -> Result<Claim, Error> {
        check_key(key)?;
        let started = Instant::now();
        loop {
            let now = now_millis();
            let expired_before = now - i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
            let mut tx = self.db.writer().begin().await?;
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
                Some(
                    sqlx::query(
                        "SELECT fingerprint, response FROM payment_idempotency \
                         WHERE scope = $1 AND idempotency_key = $2",
                    )
                    .bind(scope)
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?,
                )
            };
            tx.commit().await?;
            let row = match existing {
                None => return Ok(Claim::First),
                // Released between our insert and our read: try again at once.
                Some(None) => continue,
                Some(Some(row)) => row,
            };
            let stored: String = row.try_get("fingerprint")?;
            if stored != fingerprint {
                return Err(Error::FailedPrecondition {
                    reason: "IDEMPOTENCY_KEY_REUSED",
                    message: "this Idempotency-Key was used with a different request".into(),
                });
            }
            if let Some(response) = row.try_get::<Option<Vec<u8>>, _>("response")? {
                return Ok(Claim::Replay(response));
            }
            if started.elapsed() > WAIT_FOR_FIRST {
                return Err(Error::Unavailable {
                    message: "a request with this Idempotency-Key is still in progress".into(),
                    retry_after: Some(Duration::from_secs(1)),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stores the first request's answer; later requests with the key get it.
    pub async fn complete(&self, scope: &str, key: &str, response: &[u8]) -> Result<(), Error> {
        sqlx::query(
            "UPDATE payment_idempotency SET response = $1 WHERE scope = $2 AND idempotency_key = $3",
        )
        .bind(response.to_vec())
        .bind(scope)
        .bind(key)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    /// Forgets a key whose first request failed without effect, so a retry runs.
    pub async fn release(&self, scope: &str, key: &str) -> Result<(), Error> {
        sqlx::query(
            "DELETE FROM payment_idempotency WHERE scope = $1 AND idempotency_key = $2 AND response IS NULL",
        )
        .bind(scope)
        .bind(key)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }
}
