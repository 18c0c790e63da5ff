//! Errors at the edge as RFC 9457 problem details (`application/problem+json`).
//!
//! A gRPC status becomes the matching HTTP status (the table grpc-gateway and Envoy use),
//! and its google.rpc details become members: `reason` from ErrorInfo, `errors` from
//! BadRequest field violations, and a `Retry-After` header from RetryInfo.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::StatusExt;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// One problem response.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub code: Code,
    pub detail: String,
    pub reason: Option<String>,
    pub errors: Vec<(String, String)>,
    pub retry_after_secs: Option<u64>,
    pub request_id: Option<String>,
    pub allow: Vec<http::Method>,
    /// Answer with `Connection: close` (a client that misbehaved on this connection).
    pub close_connection: bool,
}

impl Problem {
    pub fn new(status: StatusCode, code: Code, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            reason: None,
            errors: Vec::new(),
            retry_after_secs: None,
            request_id: None,
            allow: Vec::new(),
            close_connection: false,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Code::InvalidArgument, detail)
    }

    pub fn with_reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_string());
        self
    }

    pub fn with_request_id(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }

    /// The problem a gRPC status stands for.
    pub fn from_status(status: &tonic::Status) -> Self {
        let details = status.get_error_details();
        let mut problem = Self::new(http_status(status.code()), status.code(), status.message());
        if let Some(info) = details.error_info() {
            problem.reason = Some(info.reason.clone());
            if UNPROCESSABLE.contains(&info.reason.as_str()) {
                problem.status = StatusCode::UNPROCESSABLE_ENTITY;
            }
        }
        if let Some(bad_request) = details.bad_request() {
            problem.errors = bad_request
                .field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect();
        }
        if let Some(retry) = details.retry_info()
            && let Some(delay) = retry.retry_delay
        {
            problem.retry_after_secs = Some(delay.as_secs().max(1));
        }
        if problem.retry_after_secs.is_none()
            && matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
        {
            problem.retry_after_secs = Some(1);
        }
        problem
    }
}

/// Reasons answered with 422: the request is well formed but the domain will not process
/// it as asked. Stripe's answer to an `Idempotency-Key` reused with another request, and
/// a learner asking for a partial refund (the payment service's rules).
pub const UNPROCESSABLE: [&str; 2] = ["IDEMPOTENCY_KEY_REUSED", "PARTIAL_REFUND_NOT_ALLOWED"];

/// gRPC code to HTTP status.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        // As in Google's API design guide and grpc-gateway: 412 is reserved for HTTP
        // conditional requests, so a failed domain precondition is a 400.
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": code_name(self.code),
        });
        if let Some(reason) = &self.reason {
            body["reason"] = Value::String(reason.clone());
        }
        if let Some(request_id) = &self.request_id {
            body["requestId"] = Value::String(request_id.clone());
        }
        if !self.errors.is_empty() {
            body["errors"] = self
                .errors
                .iter()
                .map(|(field, description)| json!({"field": field, "description": description}))
                .collect();
        }
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.close_connection {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if !self.allow.is_empty() {
            let allow: Vec<&str> = self.allow.iter().map(http::Method::as_str).collect();
            if let Ok(value) = HeaderValue::from_str(&allow.join(", ")) {
                headers.insert(header::ALLOW, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duovarsity_common::{Error, FieldViolation};

    #[test]
    fn field_violations_and_reason_survive_the_trip() {
        let status = tonic::Status::from(Error::InvalidArgument(vec![FieldViolation::new(
            "password",
            "must be at least 10 characters",
        )]));
        let problem = Problem::from_status(&status);
        assert_eq!(problem.status, StatusCode::BAD_REQUEST);
        assert_eq!(problem.reason.as_deref(), Some("INVALID_ARGUMENT"));
        assert_eq!(problem.errors[0].0, "password");
    }

    #[test]
    fn the_status_table() {
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(http_status(Code::PermissionDenied), StatusCode::FORBIDDEN);
        assert_eq!(http_status(Code::AlreadyExists), StatusCode::CONFLICT);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(Code::Internal),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
