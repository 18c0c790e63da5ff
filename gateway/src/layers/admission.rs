//! Admission to the upstream: a call is let through only while the upstream's in-flight
//! cap (and the lag governor's cap on calls started at once) leaves room for the caller's
//! priority; lower tiers are shed first, with 503 `OVERLOADED` and `Retry-After: 1`. The
//! admission is held until the answer (or, for a stream, its start) is back.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tonic::Code;

use super::{Caller, Matched};
use crate::Gateway;
use crate::priority::Priority;
use crate::problem::Problem;

pub async fn admit(State(gateway): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let Some(matched) = request.extensions().get::<Matched>() else {
        return next.run(request).await;
    };
    let claims = request
        .extensions()
        .get::<Caller>()
        .and_then(|c| c.0.as_ref());
    let priority = Priority::of(
        claims.map(|c| c.tier.as_str()),
        claims.map(|c| c.role.as_str()),
    );
    let Some(_admitted) = gateway.upstreams.admit(&matched.route.service, priority) else {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "the service is at capacity; retry shortly",
        )
        .with_reason("OVERLOADED");
        problem.retry_after_secs = Some(1);
        return problem.into_response();
    };
    next.run(request).await
}
