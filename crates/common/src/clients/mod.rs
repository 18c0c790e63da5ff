//! Typed clients for calls between services. Each carries the caller's credentials and
//! remaining deadline on ([`Onward`](crate::grpc::Onward)), bounds every call by its own
//! deadline, asks another replica when one refused the connection before it saw the call
//! ([`never_sent`](crate::grpc::never_sent)), and turns the callee's failures into the
//! platform's errors: NOT_FOUND stays a not-found, anything else is UNAVAILABLE with a
//! retry delay, never a hang.

mod course;

pub use course::CourseClient;
