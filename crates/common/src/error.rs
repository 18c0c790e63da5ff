//! The one error vocabulary of the platform. Services return [`Error`]; one `From` impl
//! turns it into a `tonic::Status` carrying google.rpc details (`BadRequest` field
//! violations, `ErrorInfo` with a stable reason, `RetryInfo`), and the gateway turns that
//! status into an HTTP problem. Storage errors become these where storage is
//! (`crate::db`), so this module depends on nothing else of the crate.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{BadRequest, ErrorDetail, ErrorInfo, RetryInfo, StatusExt};

/// The `ErrorInfo.domain` of every error the platform raises.
pub const ERROR_DOMAIN: &str = "duovarsity.dev";

/// One field of a request that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's proto name, dotted for nested fields (`profile.time_zone`).
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Everything a service call can fail with. `reason` fields are stable UPPER_SNAKE_CASE
/// identifiers that clients may branch on; messages are for people.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the request has invalid fields")]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{message}")]
    AlreadyExists {
        reason: &'static str,
        message: String,
    },
    #[error("{message}")]
    Unauthenticated {
        reason: &'static str,
        message: String,
    },
    #[error("{message}")]
    PermissionDenied {
        reason: &'static str,
        message: String,
    },
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
    },
    #[error("{message}")]
    ResourceExhausted {
        reason: &'static str,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// At capacity: refused at once, before queueing (503 with reason `OVERLOADED` and
    /// retry advice).
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The caller's deadline passed before the work was done (the gateway answers 504).
    #[error("{message}")]
    DeadlineExceeded { message: String },
    /// Details are logged where the error is created; callers see a generic message.
    #[error("internal error")]
    Internal,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::NotFound { what: what.into() }
    }

    pub fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Unauthenticated {
            reason,
            message: message.into(),
        }
    }

    pub fn permission_denied(reason: &'static str, message: impl Into<String>) -> Self {
        Self::PermissionDenied {
            reason,
            message: message.into(),
        }
    }

    /// Logs `source` once, with context, and hides it from the caller.
    pub fn internal(context: &str, source: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %source, "{context}");
        Self::Internal
    }

    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound { .. } => Code::NotFound,
            Self::AlreadyExists { .. } => Code::AlreadyExists,
            Self::Unauthenticated { .. } => Code::Unauthenticated,
            Self::PermissionDenied { .. } => Code::PermissionDenied,
            Self::FailedPrecondition { .. } => Code::FailedPrecondition,
            Self::ResourceExhausted { .. } => Code::ResourceExhausted,
            Self::Unavailable { .. } | Self::Overloaded { .. } => Code::Unavailable,
            Self::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            Self::Internal => Code::Internal,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "INVALID_ARGUMENT",
            Self::NotFound { .. } => "NOT_FOUND",
            Self::AlreadyExists { reason, .. }
            | Self::Unauthenticated { reason, .. }
            | Self::PermissionDenied { reason, .. }
            | Self::FailedPrecondition { reason, .. }
            | Self::ResourceExhausted { reason, .. } => reason,
            Self::Unavailable { .. } => "UNAVAILABLE",
            Self::Overloaded { .. } => "OVERLOADED",
            Self::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED",
            Self::Internal => "INTERNAL",
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        let mut details = vec![ErrorDetail::from(ErrorInfo::new(
            error.reason(),
            ERROR_DOMAIN,
            HashMap::<String, String>::new(),
        ))];
        match &error {
            Error::InvalidArgument(violations) => {
                let mut bad_request = BadRequest::new(Vec::new());
                for violation in violations {
                    bad_request.add_violation(&violation.field, &violation.description);
                }
                details.push(bad_request.into());
            }
            Error::ResourceExhausted { retry_after, .. }
            | Error::Unavailable { retry_after, .. }
            | Error::Overloaded { retry_after, .. } => {
                if let Some(delay) = retry_after {
                    details.push(RetryInfo::new(Some(*delay)).into());
                }
            }
            _ => {}
        }
        Status::with_error_details_vec(error.code(), error.to_string(), details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_field_violations_and_a_reason() {
        let status = Status::from(Error::InvalidArgument(vec![
            FieldViolation::new("password", "must be at least 10 characters"),
            FieldViolation::new("email", "is not an email address"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let violations = &details.bad_request().unwrap().field_violations;
        assert_eq!(violations.len(), 2);
        assert_eq!(violations[0].field, "password");
        assert_eq!(details.error_info().unwrap().reason, "INVALID_ARGUMENT");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let status = Status::from(Error::internal("boom", &"secret table name"));
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }

    #[test]
    fn retry_advice_travels_with_overload() {
        let status = Status::from(Error::ResourceExhausted {
            reason: "RESOURCE_EXHAUSTED",
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(3)),
        });
        let details = status.get_error_details();
        assert_eq!(
            details.retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(3))
        );
    }
}
