//! Password hashing: argon2id, bounded.
//!
//! Hashing runs on the blocking pool: argon2id is deliberately slow (about 20-50 ms with
//! the OWASP parameters the `argon2` crate defaults to) and must not stall the async
//! workers. It is also memory-hard (19 MiB per hash), so at most one hash per core runs at
//! a time and a bounded number wait; beyond that a sign-in fails fast with
//! RESOURCE_EXHAUSTED and retry advice instead of queueing without limit (a burst of
//! logins once grew the process to gigabytes). Logins for unknown emails verify against a
//! dummy hash, so that unknown-email and wrong-password answers take similar time.

use std::sync::LazyLock;
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use duovarsity_common::Error;
use rand::rngs::OsRng;
use tokio::sync::Semaphore;

/// Hashes waiting per running hash before new ones are refused.
const QUEUED_PER_CORE: usize = 16;

/// Admission to password hashing: `running` bounds CPU and memory, `admitted` bounds the
/// queue in front of it.
struct HashingLimits {
    running: Semaphore,
    admitted: Semaphore,
}

static LIMITS: LazyLock<HashingLimits> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    HashingLimits {
        running: Semaphore::new(cores),
        admitted: Semaphore::new(cores * (QUEUED_PER_CORE + 1)),
    }
});

/// Runs one argon2 computation within the limits.
async fn bounded<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let _admitted = LIMITS
        .admitted
        .try_acquire()
        .map_err(|_| Error::ResourceExhausted {
            reason: "RESOURCE_EXHAUSTED",
            message: "too many sign-ins are in progress; retry shortly".into(),
            retry_after: Some(Duration::from_secs(1)),
        })?;
    let _running = LIMITS
        .running
        .acquire()
        .await
        .map_err(|e| Error::internal("password hashing limits", &e))?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal("password hashing task", &e))?
}

/// An argon2id PHC string for `password`.
pub async fn hash(password: String) -> Result<String, Error> {
    bounded(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| Error::internal("hashing a password", &e))
    })
    .await
}

/// Whether `password` matches `stored` (or, with no stored hash, a dummy one, so the
/// answer takes as long as a real check).
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, Error> {
    static DUMMY: LazyLock<String> = LazyLock::new(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"duovarsity-timing-equaliser", &salt)
            .expect("hashing a constant succeeds")
            .to_string()
    });
    bounded(move || {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| DUMMY.clone());
        let parsed =
            PasswordHash::new(&phc).map_err(|e| Error::internal("stored password hash", &e))?;
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_only_their_password() {
        let hash = hash("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            verify("correct horse battery".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify("wrong horse battery".into(), Some(hash))
                .await
                .unwrap()
        );
        assert!(!verify("anything at all".into(), None).await.unwrap());
    }
}
