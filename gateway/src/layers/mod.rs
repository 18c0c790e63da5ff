//! The REST request path as a stack of tower layers, outermost first; each is a file named
//! for what it does, and reads or adds what the ones inside need as request extensions:
//!
//! 1. [`metrics`]: `http_requests_in_flight`, `http_requests_total{route,method,status}`,
//!    `http_request_duration_seconds`, and the request id in every problem body.
//! 2. [`routing`]: the route of the method and path ([`Matched`]), or 404/405.
//! 3. [`edge_cache`]: an anonymous GET answered from the edge cache; a public answer from
//!    inside stored there.
//! 4. [`authentication`]: the bearer token checked against the route's `access` option
//!    (the same rule as the services'); the caller's claims for the layers inside.
//! 5. [`admission`]: the upstream's in-flight cap and the lag governor, lower tiers shed
//!    first (503 `OVERLOADED`).
//! 6. [`transcoding`]: the body read within its limit and time, JSON to protobuf, the
//!    upstream call (balanced per request with outlier ejection and retried within a
//!    budget, [`crate::upstream`]), and protobuf back to JSON, SSE or raw bytes.
//!
//! Rate limits ([`crate::ratelimit::enforce`]), tracing, request ids and CORS wrap the
//! whole router, around this stack.

pub mod admission;
pub mod authentication;
pub mod edge_cache;
pub mod metrics;
pub mod routing;
pub mod transcoding;

use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use duovarsity_common::auth::Claims;

use crate::Gateway;
use crate::routes::Route;

/// The route a request matched, with its path variables.
#[derive(Clone)]
pub struct Matched {
    pub route: Arc<Route>,
    pub bindings: Vec<(Vec<String>, String)>,
}

/// Who calls: the verified claims, or `None` for an anonymous caller of a public route.
#[derive(Clone)]
pub struct Caller(pub Option<Claims>);

/// Every REST call, through the stack above.
pub fn rest(gateway: &Arc<Gateway>) -> Router {
    Router::new()
        .fallback(transcoding::call)
        .layer(from_fn_with_state(gateway.clone(), admission::admit))
        .layer(from_fn_with_state(
            gateway.clone(),
            authentication::authenticate,
        ))
        .layer(from_fn_with_state(gateway.clone(), edge_cache::serve))
        .layer(from_fn_with_state(gateway.clone(), routing::route))
        .layer(axum::middleware::from_fn(metrics::record))
        .with_state(gateway.clone())
}
