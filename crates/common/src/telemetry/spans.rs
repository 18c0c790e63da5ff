//! Spans named and attributed as the OpenTelemetry semantic conventions ask, so that any
//! tracing backend shows routes, RPC methods, statements and topics rather than bare
//! `http`/`grpc` spans:
//!
//! - HTTP server: `{method} {route}`, `http.request.method`, `http.route`, `url.path`,
//!   `http.response.status_code` (5xx marks the span as an error).
//! - gRPC server and client: `{package.Service}/{Method}`, `rpc.system=grpc`, `rpc.service`,
//!   `rpc.method`, `rpc.grpc.status_code` (server errors as the conventions list them).
//! - Database: `{operation} {table}`, `db.system`, `db.operation.name`,
//!   `db.collection.name`.
//! - Messaging: `publish {topic}` (producer) and `process {topic}` (consumer) with
//!   `messaging.system`, `messaging.destination.name` and `messaging.operation.type`.
//!
//! Entry spans (HTTP server, gRPC server, event processing) also carry `trace_id`, so every
//! log line written inside them names its trace.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::{Layer, Service};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Paths polled by probes and scrapers: untraced, or every probe would start a trace.
pub fn is_probe_path(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/status" | "/metrics")
        || path.starts_with("/grpc.health.v1.")
}

/// The server span of one HTTP request. The route is not known until the request is
/// matched: [`record_http_route`] names the span then.
pub fn http_server(request: &http::Request<impl Sized>) -> tracing::Span {
    if is_probe_path(request.uri().path()) {
        return tracing::Span::none();
    }
    let request_id = header(request.headers(), "x-request-id");
    let span = tracing::info_span!(
        "http",
        otel.name = %request.method(),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %request.method(),
        url.path = %request.uri().path(),
        http.route = Empty,
        http.response.status_code = Empty,
        request_id = %request_id,
        trace_id = Empty,
    );
    enter_trace(&span, request.headers());
    span
}

/// Names the current HTTP server span after the matched route template.
pub fn record_http_route(method: &http::Method, route: &str) {
    let span = tracing::Span::current();
    // The span has started (its trace id is logged), so it is renamed in place rather than
    // through the `otel.name` field, which only names spans not yet started.
    opentelemetry::trace::TraceContextExt::span(&span.context())
        .update_name(format!("{method} {route}"));
    span.record("http.route", route);
}

/// Records the response status on an HTTP server span.
pub fn record_http_status(span: &tracing::Span, status: http::StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
}

/// `/package.Service/Method` split into the service and the method.
fn rpc_names(path: &str) -> (&str, &str) {
    path.trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""))
}

/// A gRPC span of `kind` (`server` or `client`) for `/package.Service/Method`.
fn grpc_span(path: &str, kind: &'static str) -> tracing::Span {
    let (service, method) = rpc_names(path);
    tracing::info_span!(
        "grpc",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = kind,
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = Empty,
        request_id = Empty,
        trace_id = Empty,
    )
}

/// The server span of one gRPC call, continuing the caller's trace.
pub fn grpc_server(request: &http::Request<impl Sized>) -> tracing::Span {
    let path = request.uri().path();
    if is_probe_path(path) {
        return tracing::Span::none();
    }
    let span = grpc_span(path, "server");
    span.record("request_id", header(request.headers(), "x-request-id"));
    enter_trace(&span, request.headers());
    span
}

/// The client span of one gRPC call made from the current span.
pub fn grpc_client(path: &str) -> tracing::Span {
    grpc_span(path, "client")
}

/// Records a gRPC status on a server or client span. The conventions count only codes
/// that mean the server failed as errors of a server span; a client sees every non-OK
/// code as an error.
pub fn record_grpc_status(span: &tracing::Span, code: tonic::Code, server: bool) {
    span.record("rpc.grpc.status_code", code as i64);
    let failed = if server {
        matches!(
            code,
            tonic::Code::Unknown
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Unimplemented
                | tonic::Code::Internal
                | tonic::Code::Unavailable
                | tonic::Code::DataLoss
        )
    } else {
        code != tonic::Code::Ok
    };
    if failed {
        span.record("otel.status_code", "ERROR");
    }
}

/// The gRPC status of a response whose headers are at hand: an error answered
/// trailers-only carries it in the headers; otherwise the call got an answer.
pub fn grpc_status_of<B>(response: &http::Response<B>) -> tonic::Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// The `db.system` value of an open connection (`sqlite`, `postgresql`).
pub fn db_system(connection: &sqlx::AnyConnection) -> String {
    connection.backend_name().to_ascii_lowercase()
}

/// A client span for one SQL statement (`operation` is its kind: `SELECT`, `INSERT`...).
pub fn db_statement(system: &str, operation: &'static str, table: &str) -> tracing::Span {
    tracing::info_span!(
        "db",
        otel.name = %format!("{operation} {table}"),
        otel.kind = "client",
        db.system = %system,
        db.operation.name = operation,
        db.collection.name = %table,
    )
}

/// A producer span for publishing one event to `topic`, continuing the trace the event was
/// written in (its stored `traceparent`).
pub fn messaging_publish(system: &'static str, topic: &str, traceparent: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "publish",
        otel.name = %format!("publish {topic}"),
        otel.kind = "producer",
        otel.status_code = Empty,
        messaging.system = system,
        messaging.destination.name = %topic,
        messaging.operation.type = "publish",
        messaging.operation.name = "publish",
    );
    enter_trace(&span, &traceparent_headers(traceparent));
    span
}

/// A consumer span for processing one record of `topic` in `group`, continuing the
/// producer's trace from the record's headers.
pub fn messaging_process(
    system: &'static str,
    topic: &str,
    group: &str,
    partition: i32,
    offset: i64,
    traceparent: &str,
) -> tracing::Span {
    let span = tracing::info_span!(
        "process",
        otel.name = %format!("process {topic}"),
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = system,
        messaging.destination.name = %topic,
        messaging.consumer.group.name = %group,
        messaging.destination.partition.id = %partition,
        messaging.kafka.offset = offset,
        messaging.operation.type = "process",
        messaging.operation.name = "process",
        trace_id = Empty,
    );
    enter_trace(&span, &traceparent_headers(traceparent));
    span
}

/// Marks `span` as failed.
pub fn record_error(span: &tracing::Span) {
    span.record("otel.status_code", "ERROR");
}

/// The `traceparent` of `span`, as W3C trace context writes it (empty when untraced).
pub fn traceparent_of(span: &tracing::Span) -> String {
    let mut headers = http::HeaderMap::new();
    super::inject_trace(span, &mut headers);
    header(&headers, "traceparent").to_string()
}

fn traceparent_headers(traceparent: &str) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_str(traceparent) {
        headers.insert("traceparent", value);
    }
    headers
}

/// Continues the trace named by `headers` and records its id on the span for the logs.
fn enter_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    super::continue_trace(span, headers);
    let context = span.context();
    let span_context = opentelemetry::trace::TraceContextExt::span(&context)
        .span_context()
        .clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
    }
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// A tower layer for gRPC clients: a client span per call whose context travels in the
/// request's `traceparent`, so the server's span is its child.
#[derive(Clone, Copy, Default)]
pub struct GrpcClientTraceLayer;

impl<S> Layer<S> for GrpcClientTraceLayer {
    type Service = GrpcClientTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcClientTrace { inner }
    }
}

/// See [`GrpcClientTraceLayer`].
#[derive(Clone)]
pub struct GrpcClientTrace<S> {
    inner: S,
}

impl<S> GrpcClientTrace<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

/// A gRPC channel whose calls are traced: what every service-to-service client uses.
pub type TracedChannel = GrpcClientTrace<tonic::transport::Channel>;

impl<S, B, R> Service<http::Request<B>> for GrpcClientTrace<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let span = grpc_client(request.uri().path());
        super::inject_trace(&span, request.headers_mut());
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            match &result {
                Ok(response) => record_grpc_status(&span, grpc_status_of(response), false),
                Err(_) => record_grpc_status(&span, tonic::Code::Unavailable, false),
            }
            result
        })
    }
}
