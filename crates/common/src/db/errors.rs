//! Storage errors in the platform's vocabulary, translated at the boundary: a missing row is
//! `NotFound`, a unique violation `AlreadyExists`, a refusal of the pool's admission
//! `Overloaded`, an unreachable database (no connection in time, a broken one, a server
//! shutting down) `Unavailable` with a retry delay, anything else `Internal`, logged once
//! where it happens.

use std::time::Duration;

use crate::error::Error;

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::RowNotFound => Self::not_found("record"),
            _ if super::admission::is_overloaded(&error) => Self::Overloaded {
                message: format!("{error}; retry shortly"),
                retry_after: Some(Duration::from_secs(1)),
            },
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::AlreadyExists {
                reason: "ALREADY_EXISTS",
                message: "a record with the same key already exists".to_string(),
            },
            _ if database_unreachable(&error) => {
                tracing::warn!(error = %error, "database unavailable");
                Self::Unavailable {
                    message: "the database is unavailable; retry shortly".to_string(),
                    retry_after: Some(Duration::from_secs(1)),
                }
            }
            _ => Self::internal("database error", &error),
        }
    }
}

/// Whether `error` says the database cannot be reached (now), rather than that the query is
/// wrong: no connection within the pool's acquire timeout, a broken connection, or a
/// PostgreSQL server that is shutting down or starting (SQLSTATE classes 08 and 57P).
fn database_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}
