//! The innermost service: the request body read within its limit and time, JSON (or raw
//! bytes) to the method's protobuf message, the upstream call, and the answer back as JSON,
//! server-sent events or raw bytes, with the service's `etag` and `cache-control`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tonic::Code;
use tonic::metadata::MetadataMap;

use super::Matched;
use super::edge_cache::CacheTags;
use crate::edge_cache::if_none_match;
use crate::problem::Problem;
use crate::routes::{BodyTarget, Route};
use crate::transcode::{self, RequestError};
use crate::{Gateway, sse};

/// Request headers forwarded to services as gRPC metadata.
const FORWARDED_HEADERS: [&str; 7] = [
    "authorization",
    "x-request-id",
    "accept-language",
    // Payments: Stripe-style idempotency, and the providers' webhook signatures.
    "idempotency-key",
    "x-razorpay-signature",
    "x-razorpay-event-id",
    "stripe-signature",
];

pub async fn call(State(gateway): State<Arc<Gateway>>, mut request: Request) -> Response {
    // Taken, not cloned: nothing after this needs it in the request.
    let Some(matched) = request.extensions_mut().remove::<Matched>() else {
        return Problem::new(StatusCode::NOT_FOUND, Code::NotFound, "no route")
            .with_reason("ROUTE_NOT_FOUND")
            .into_response();
    };
    match transcode_call(&gateway, &matched.route, &matched.bindings, request).await {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn transcode_call(
    gateway: &Gateway,
    route: &Route,
    bindings: &[(Vec<String>, String)],
    request: Request,
) -> Result<Response, Problem> {
    let (parts, body) = request.into_parts();
    let service = &route.service;
    let raw_body = transcode::takes_raw_body(route);
    let limit = if route.media_body {
        gateway.media_body_limit
    } else {
        gateway.body_limit
    };
    let body = read_body(body, &parts.headers, limit, gateway.body_read_timeout).await?;
    if !raw_body && route.body != BodyTarget::None && !body.is_empty() && !is_json(&parts.headers) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidArgument,
            "send the request body as JSON (Content-Type: application/json)",
        )
        .with_reason("UNSUPPORTED_MEDIA_TYPE"));
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let message =
        transcode::request_message(route, bindings, parts.uri.query(), &body, content_type)
            .map_err(|error| {
                let reason = match error {
                    RequestError::MalformedJson(_) | RequestError::NotAnObject => "MALFORMED_JSON",
                    RequestError::UnknownParameter(_) => "UNKNOWN_PARAMETER",
                    RequestError::InvalidField(_) | RequestError::InvalidParameter { .. } => {
                        "INVALID_FIELD"
                    }
                };
                Problem::bad_request(error.to_string()).with_reason(reason)
            })?;

    let mut forwarded = HeaderMap::new();
    for name in FORWARDED_HEADERS {
        if let Some(value) = parts.headers.get(name) {
            forwarded.insert(name, value.clone());
        }
    }
    if let Some(switch) = sse::requested(route, &message) {
        let (metadata, stream) = gateway
            .upstreams
            .server_streaming(
                service,
                &switch.grpc_path,
                MetadataMap::from_headers(forwarded),
                gateway.stream_deadline(&switch.grpc_path),
                message,
            )
            .await
            .map_err(|status| Problem::from_status(&status))?;
        return sse::response(switch.method.output(), &metadata, stream).await;
    }
    let (metadata, reply) = gateway
        .upstreams
        .unary(
            service,
            &route.grpc_path,
            MetadataMap::from_headers(forwarded),
            gateway.deadline(&route.grpc_path),
            message,
            route.idempotent,
        )
        .await
        .map_err(|status| Problem::from_status(&status))?;
    let unreadable = |error: String| {
        tracing::error!(%error, method = %route.grpc_path, "could not render a response");
        Problem::new(
            StatusCode::BAD_GATEWAY,
            Code::Internal,
            "the service sent an unreadable response",
        )
    };
    // HTTP caching: services send `etag` and `cache-control` as response metadata.
    let header_from = |name: &str| {
        metadata
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| HeaderValue::from_str(v).ok())
    };
    let etag = header_from("etag");
    let cache_control = header_from("cache-control");
    let not_modified = etag
        .as_ref()
        .is_some_and(|etag| if_none_match(&parts.headers, etag));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else if transcode::returns_raw_body(route) {
        let (content_type, data) = transcode::response_raw(&reply).map_err(unreadable)?;
        let content_type = HeaderValue::from_str(&content_type)
            .unwrap_or(HeaderValue::from_static("application/octet-stream"));
        let mut response = Bytes::from(data).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
        response.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    } else {
        let json = Bytes::from(transcode::response_json(route, &reply).map_err(unreadable)?);
        ([(header::CONTENT_TYPE, "application/json")], json).into_response()
    };
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    for (name, value) in sse::passed_headers(&metadata) {
        response.headers_mut().insert(name, value);
    }
    if let Some(cache_control) = cache_control {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, cache_control);
        // Services see Accept-Language: a shared cache must key on it too.
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("accept-language"));
    }
    if let Some(tags) = metadata
        .get(duovarsity_common::grpc::CACHE_TAGS)
        .and_then(|v| v.to_str().ok())
    {
        response
            .extensions_mut()
            .insert(CacheTags(tags.to_string()));
    }
    Ok(response)
}

/// The request body, checked against `limit` before it is read (a declared
/// `Content-Length`) and while it streams, and read within `timeout`: a client that
/// trickles its body is answered 408 and its connection closed, instead of holding a
/// buffer and a task for as long as it likes.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, Problem> {
    let too_large = || {
        metrics::counter!("http_body_refusals_total", "reason" => "too_large").increment(1);
        Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::InvalidArgument,
            format!("the request body is larger than {limit} bytes"),
        )
        .with_reason("PAYLOAD_TOO_LARGE")
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(error)) => Err(Problem::bad_request(format!(
            "the request body could not be read: {error}"
        ))
        .with_reason("BODY_UNREADABLE")),
        Err(_) => {
            metrics::counter!("http_read_timeouts_total", "phase" => "body").increment(1);
            let mut problem = Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                Code::DeadlineExceeded,
                format!(
                    "the request body did not arrive within {} ms",
                    timeout.as_millis()
                ),
            )
            .with_reason("BODY_READ_TIMEOUT");
            problem.close_connection = true;
            Err(problem)
        }
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|v| {
            v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
        })
}
