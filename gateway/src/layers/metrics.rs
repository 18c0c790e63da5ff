//! What every REST call counts, and the request id added to problem bodies built before
//! the id was at hand.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::header;
use http_body_util::BodyExt;

use crate::meters;
use crate::problem;
use crate::routes::Route;

/// The route a response answered, set by the routing layer (none: `unmatched`).
#[derive(Clone)]
pub struct RouteLabel(pub Arc<Route>);

pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::enter();
    let method = request.method().clone();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut response = next.run(request).await;
    if response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == problem::PROBLEM_JSON)
    {
        response = attach_request_id(response, request_id).await;
    }
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    match response.extensions().get::<RouteLabel>() {
        Some(RouteLabel(route)) => route.meters.record(&route.label, &method, status, seconds),
        None => {
            meters::requests_counter("unmatched", &method, status).increment(1);
            metrics::histogram!("http_request_duration_seconds", "route" => "unmatched")
                .record(seconds);
        }
    }
    response
}

/// Counts a REST call in `http_requests_in_flight` for as long as it runs (also when the
/// client goes away and the call is dropped).
struct InFlight(&'static metrics::Gauge);

/// The gauge's handle, made on the first call (after the process installed its recorder).
static IN_FLIGHT: OnceLock<metrics::Gauge> = OnceLock::new();

impl InFlight {
    fn enter() -> Self {
        let gauge = IN_FLIGHT.get_or_init(|| metrics::gauge!("http_requests_in_flight"));
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Adds `requestId` to a problem body.
async fn attach_request_id(response: Response, request_id: Option<String>) -> Response {
    let Some(request_id) = request_id else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = body.collect().await.map(|c| c.to_bytes()) else {
        return Response::from_parts(parts, Body::empty());
    };
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if let Some(object) = json.as_object_mut() {
        object.insert("requestId".into(), request_id.into());
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(json.to_string()))
}
