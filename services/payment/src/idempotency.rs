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

use crate::store;

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
            let existing =
                store::idempotency::claim(&self.db, scope, key, fingerprint, now, expired_before)
                    .await?;
            let stored = match existing {
                None => return Ok(Claim::First),
                // Released between our insert and our read: try again at once.
                Some(None) => continue,
                Some(Some(stored)) => stored,
            };
            if stored.fingerprint != fingerprint {
                return Err(Error::FailedPrecondition {
                    reason: "IDEMPOTENCY_KEY_REUSED",
                    message: "this Idempotency-Key was used with a different request".into(),
                });
            }
            if let Some(response) = stored.response {
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
        store::idempotency::complete(&self.db, scope, key, response).await
    }

    /// Forgets a key whose first request failed without effect, so a retry runs.
    pub async fn release(&self, scope: &str, key: &str) -> Result<(), Error> {
        store::idempotency::release(&self.db, scope, key).await
    }
}
