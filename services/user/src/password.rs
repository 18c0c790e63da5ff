//! Credentials: the password policy, argon2id hashing, and input normalisation.
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
use duovarsity_common::{Error, FieldViolation};
use rand::rngs::OsRng;
use tokio::sync::Semaphore;

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_CHARS: usize = 256;
const MAX_EMAIL_CHARS: usize = 254;
const MAX_DISPLAY_NAME_CHARS: usize = 100;

/// Trimmed and lower-cased, so `Ana@Example.com ` and `ana@example.com` are one account.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Violations of the email rules for an already normalised address.
pub fn check_email(email: &str) -> Option<FieldViolation> {
    let problem = if email.is_empty() {
        Some("is required")
    } else if email.chars().count() > MAX_EMAIL_CHARS {
        Some("must be at most 254 characters")
    } else {
        match email.split_once('@') {
            Some((local, domain))
                if !local.is_empty()
                    && !domain.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !email.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                None
            }
            _ => Some("is not a valid email address"),
        }
    };
    problem.map(|description| FieldViolation::new("email", description))
}

/// The password policy: 10 to 256 characters and not the account's email.
pub fn check_password(password: &str, normalized_email: &str) -> Option<FieldViolation> {
    let chars = password.chars().count();
    let problem = if chars < MIN_PASSWORD_CHARS {
        Some("must be at least 10 characters")
    } else if chars > MAX_PASSWORD_CHARS {
        Some("must be at most 256 characters")
    } else if normalize_email(password) == normalized_email {
        Some("must not be the email address")
    } else {
        None
    };
    problem.map(|description| FieldViolation::new("password", description))
}

/// A display name: 1 to 100 characters after trimming, no control characters.
pub fn check_display_name(name: &str) -> Option<FieldViolation> {
    let name = name.trim();
    let problem = if name.is_empty() {
        Some("is required")
    } else if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        Some("must be at most 100 characters")
    } else if name.chars().any(char::is_control) {
        Some("must not contain control characters")
    } else {
        None
    };
    problem.map(|description| FieldViolation::new("display_name", description))
}

/// A BCP 47 language tag such as "en" or "pt-BR".
pub fn check_locale(locale: &str) -> Option<FieldViolation> {
    (!duovarsity_common::validate::is_language_tag(locale)).then(|| {
        FieldViolation::new(
            "locale",
            "must be a BCP 47 language tag such as \"en\" or \"pt-BR\"",
        )
    })
}

/// An IANA time zone known to the bundled tz database.
pub fn check_time_zone(zone: &str) -> Option<FieldViolation> {
    jiff::tz::TimeZone::get(zone).is_err().then(|| {
        FieldViolation::new(
            "time_zone",
            "must be an IANA time zone such as \"UTC\" or \"Europe/Lisbon\"",
        )
    })
}

/// Collects violations into one INVALID_ARGUMENT, or passes.
pub use duovarsity_common::validate::ensure_valid;

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

    #[test]
    fn password_policy() {
        assert!(check_password("short", "a@b.co").is_some());
        assert!(check_password("exactly10!", "a@b.co").is_none());
        assert!(check_password("Learner@Example.com", "learner@example.com").is_some());
        assert!(check_password(&"x".repeat(257), "a@b.co").is_some());
        // Characters, not bytes: ten multi-byte characters pass.
        assert!(check_password("ááááááááá", "a@b.co").is_some());
        assert!(check_password("áááááááááá", "a@b.co").is_none());
    }

    #[test]
    fn email_rules() {
        assert_eq!(normalize_email("  Ana@Example.COM "), "ana@example.com");
        assert!(check_email("ana@example.com").is_none());
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "a b@example.com",
            "a@b@c.com",
        ] {
            assert!(check_email(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn profile_rules() {
        assert!(check_locale("en").is_none());
        assert!(check_locale("pt-BR").is_none());
        assert!(check_locale("english!").is_some());
        assert!(check_time_zone("Europe/Lisbon").is_none());
        assert!(check_time_zone("UTC").is_none());
        assert!(check_time_zone("Mars/Olympus_Mons").is_some());
        assert!(check_display_name("  ").is_some());
        assert!(check_display_name("Ada").is_none());
    }

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
