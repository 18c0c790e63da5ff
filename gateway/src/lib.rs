//! The gateway: public REST/JSON in, gRPC out.
//!
//! Every REST route comes from a `google.api.http` annotation in the descriptor set
//! ([`routes`]); requests are transcoded with prost-reflect ([`transcode`]) and sent as raw
//! protobuf to the owning service ([`upstream`]). No handler is written per method.
//!
//! At the edge the gateway also: verifies bearer tokens locally against the user service's
//! JWKS (cached, refetched on an unknown `kid`) using the same [`authorize`] rule as the
//! services; answers errors as RFC 9457 problems ([`problem`]); propagates or generates
//! `x-request-id` and W3C trace context; enforces a request body limit (413); applies CORS
//! from configuration; and serves `/openapi.json`, `/healthz`, `/readyz` and `/metrics`.
#![forbid(unsafe_code)]

pub mod balance;
pub mod edge;
pub mod edge_cache;
pub mod lag;
pub mod live;
pub mod openapi;
pub mod priority;
pub mod problem;
pub mod ratelimit;
pub mod routes;
mod sse;
pub mod template;
pub mod transcode;
pub mod upstream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use duovarsity_common::auth::{RemoteJwks, TokenVerifier, authorize, bearer_token};
use duovarsity_common::cache::CacheHub;
use duovarsity_common::grpc::LocalGrpc;
use duovarsity_common::telemetry;
use duovarsity_config::Config;
use duovarsity_module::Upstream;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::metadata::MetadataMap;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use crate::edge::{EdgeLimits, run};
use crate::edge_cache::EdgeCache;
use crate::problem::Problem;
pub use crate::ratelimit::RateLimiter;
use crate::routes::{BodyTarget, Lookup, RouteTable};
use crate::transcode::RequestError;
use crate::upstream::{Priority, Upstreams};

/// The full name of the user service, whose JWKS verifies tokens.
pub const USER_SERVICE: &str = duovarsity_proto::user::user_service_server::SERVICE_NAME;
/// The package prefix of the platform's own services in the descriptor set.
const PLATFORM_PACKAGE: &str = "duovarsity.";
/// How often an unknown `kid` may trigger a JWKS refetch.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);
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

/// The gateway failed to start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("routes: {0}")]
    Routes(#[from] routes::RouteError),
    #[error("no service module serves {0} (is its module in the CLI's table?)")]
    Unserved(String),
    #[error(transparent)]
    Config(#[from] duovarsity_config::ConfigError),
    #[error("upstream {service}: {source}")]
    Upstream {
        service: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Shared state of the gateway's handlers.
pub struct Gateway {
    table: RouteTable,
    upstreams: Upstreams,
    verifier: Arc<TokenVerifier>,
    openapi: String,
    body_limit: usize,
    /// For routes marked `(duovarsity.options.v1.body) = {media: true}` (media uploads).
    media_body_limit: usize,
    /// How long a client may take to send a body once its headers arrived.
    body_read_timeout: Duration,
    request_timeout: Duration,
    /// The default deadline of a server-streamed answer.
    stream_timeout: Duration,
    /// Deadlines by `package.Service/Method` or `package.Service` (`DUOVARSITY_ROUTE_TIMEOUTS`).
    route_timeouts: HashMap<String, Duration>,
    /// Cancelled when the gateway shuts down: live connections close instead of holding
    /// the drain open.
    live_shutdown: CancellationToken,
    /// Ping interval of live sockets (three missed answers close one).
    live_ping: Duration,
    /// Public answers kept at the edge (None: off).
    edge_cache: Option<Arc<EdgeCache>>,
}

impl Gateway {
    /// Builds the route table and the upstream channels: every service of the descriptor
    /// set goes to the module of `modules` that serves it, at the URLs `config` gives for
    /// that module's name (`DUOVARSITY_<NAME>_SERVICE_URL`).
    /// `caches`: the hub whose invalidations drop edge cache entries (the services' own in
    /// embedded mode; one following Redis otherwise). `local`: the services of this
    /// process and their gRPC URL (embedded mode); upstreams at that URL are called in
    /// process.
    pub fn new(
        config: &Config,
        modules: &[Upstream],
        caches: &CacheHub,
        local: Option<(String, LocalGrpc)>,
    ) -> Result<Arc<Self>, StartError> {
        let pool = duovarsity_proto::descriptor_pool();
        let table = RouteTable::from_pool(pool)?;
        let mut upstreams = Upstreams::default();
        // The user service is always needed (JWKS); others are routed when configured, so
        // a gateway can front a subset of services. Embedded mode configures them all.
        for service in pool
            .services()
            .filter(|service| service.full_name().starts_with(PLATFORM_PACKAGE))
        {
            let service = service.full_name();
            let module = modules
                .iter()
                .find(|module| module.grpc_services.contains(&service))
                .ok_or_else(|| StartError::Unserved(service.to_string()))?;
            let urls = match config.configured_service_urls(module.name) {
                Some(urls) => urls,
                None if service == USER_SERVICE => config.service_urls(module.name),
                None => continue,
            };
            let added = match &local {
                Some((url, transport)) if urls == [url.clone()] => {
                    upstreams.add_local(service, url, transport.clone())
                }
                _ => upstreams.add(service, &urls, config.kubernetes_api_url.as_deref()),
            };
            added.map_err(|source| StartError::Upstream {
                service: service.into(),
                source,
            })?;
        }
        let user_channel = upstreams
            .channel(USER_SERVICE)
            .expect("the user service upstream was added above");
        let verifier = Arc::new(
            TokenVerifier::new(Arc::new(RemoteJwks::new(user_channel)), JWKS_MIN_REFETCH)
                .refreshing_every(Duration::from_secs(config.jwks_refresh_secs)),
        );
        upstreams.set_max_in_flight(config.upstream_max_in_flight);
        if config.shed_lag_ms > 0 {
            upstreams.govern(lag::Governor::start(
                config.upstream_max_in_flight.max(lag::MIN_CAP),
                Duration::from_millis(config.shed_lag_ms),
            ));
        }
        let openapi = openapi::document(&table).to_string();
        Ok(Arc::new(Self {
            table,
            upstreams,
            verifier,
            openapi,
            body_limit: config.body_limit_bytes,
            media_body_limit: config.media_max_bytes,
            body_read_timeout: Duration::from_millis(config.body_read_timeout_ms),
            live_shutdown: CancellationToken::new(),
            live_ping: Duration::from_secs(config.live_ping_secs),
            edge_cache: (config.edge_cache_bytes > 0)
                .then(|| EdgeCache::start(config.edge_cache_bytes, caches)),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            stream_timeout: Duration::from_millis(config.stream_timeout_ms),
            route_timeouts: config
                .route_timeouts()
                .map_err(StartError::Config)?
                .into_iter()
                .collect(),
        }))
    }

    /// The gateway's routes on the admin listener: `/status` (each upstream's health and
    /// endpoints) and `/readyz`.
    pub fn admin_routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/status", get(status))
            .route("/readyz", get(ready))
            .with_state(self.clone())
    }

    /// The verifier of access tokens (shared with the rate limiter).
    pub fn verifier(&self) -> Arc<TokenVerifier> {
        self.verifier.clone()
    }

    /// The public HTTP application with every layer. `extra`: routes of the modules that
    /// serve pages on the gateway (the payment sandbox), behind the same rate-limit, trace
    /// and request-id layers as every other route. `/metrics` and `/status` are not here
    /// (they answer 404 like any unknown path): they are on the admin listener
    /// ([`Self::admin_routes`]).
    pub fn router(
        self: &Arc<Self>,
        cors_allowed_origins: &[String],
        limits: Option<Arc<RateLimiter>>,
        extra: Vec<Router>,
    ) -> Router {
        let mut router = Router::new()
            .route(
                "/healthz",
                get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
            )
            .route("/readyz", get(ready))
            .route("/openapi.json", get(openapi_json))
            .route("/v1/ws", get(live::websocket))
            .fallback(transcode_call)
            .with_state(self.clone());
        for routes in extra {
            router = router.merge(routes);
        }
        if let Some(limits) = limits {
            router = router.layer(axum::middleware::from_fn_with_state(
                limits,
                ratelimit::enforce,
            ));
        }
        router = router
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(|request: &http::Request<Body>| {
                        telemetry::spans::http_server(request)
                    })
                    .on_response(
                        |response: &Response, _latency: Duration, span: &tracing::Span| {
                            telemetry::spans::record_http_status(span, response.status());
                        },
                    )
                    // A 503 is a refusal the platform chose (shed, overloaded, a dependency
                    // down, each logged where it is decided and counted in
                    // http_requests_total): logging each one again would make overload
                    // cost more.
                    .on_failure(
                        |failure: ServerErrorsFailureClass, latency: Duration, _: &tracing::Span| {
                            if !matches!(failure, ServerErrorsFailureClass::StatusCode(code) if code == StatusCode::SERVICE_UNAVAILABLE) {
                                tracing::error!(classification = %failure, latency_ms = latency.as_millis() as u64, "response failed");
                            }
                        },
                    ),
            )
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid));
        if let Some(cors) = cors_layer(cors_allowed_origins) {
            router = router.layer(cors);
        }
        router
    }
}

impl Gateway {
    /// The deadline of a call to `grpc_path` (`/package.Service/Method`): its own, its
    /// service's, or the default.
    fn deadline(&self, grpc_path: &str) -> Duration {
        self.configured_deadline(grpc_path)
            .unwrap_or(self.request_timeout)
    }

    /// The deadline of a server-streamed call to `grpc_path`: its own, its service's, or
    /// the streams' default.
    fn stream_deadline(&self, grpc_path: &str) -> Duration {
        self.configured_deadline(grpc_path)
            .unwrap_or(self.stream_timeout)
    }

    fn configured_deadline(&self, grpc_path: &str) -> Option<Duration> {
        let method = grpc_path.trim_start_matches('/');
        let service = method
            .split_once('/')
            .map_or(method, |(service, _)| service);
        self.route_timeouts
            .get(method)
            .or_else(|| self.route_timeouts.get(service))
            .copied()
    }

    /// Closes every live (WebSocket) connection; called when shutdown starts.
    pub fn close_live_connections(&self) {
        self.live_shutdown.cancel();
    }
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::IF_NONE_MATCH,
                header::HeaderName::from_static("x-request-id"),
            ])
            .expose_headers([
                header::ETAG,
                header::RETRY_AFTER,
                header::HeaderName::from_static("x-request-id"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

async fn openapi_json(State(gateway): State<Arc<Gateway>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        gateway.openapi.clone(),
    )
        .into_response()
}

async fn ready(State(gateway): State<Arc<Gateway>>) -> Response {
    // Routes are loaded before the listener opens; tokens need the signing keys. An
    // upstream that is down does not make the gateway unready: its routes answer 503
    // with retry advice while every other route keeps working (see /status).
    if gateway.verifier.keys_known().await {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(serde_json::json!({
                "status": "not ready",
                "reason": "the signing keys could not be fetched from the user service",
            })),
        )
            .into_response()
    }
}

/// `/status`: readiness and each upstream's health (as `/readyz` does not depend on it).
async fn status(State(gateway): State<Arc<Gateway>>) -> Response {
    let upstreams = gateway.upstreams.health().await;
    let endpoints: serde_json::Map<String, serde_json::Value> = gateway
        .upstreams
        .endpoints()
        .into_iter()
        .map(|(service, states)| {
            let states = states
                .into_iter()
                .map(|(url, ejected)| serde_json::json!({"url": url, "ejected": ejected}))
                .collect();
            (service, serde_json::Value::Array(states))
        })
        .collect();
    let keys = gateway.verifier.keys_known().await;
    axum::Json(serde_json::json!({
        "ready": keys,
        "signingKeys": if keys { "known" } else { "unknown" },
        "upstreams": upstreams,
        "endpoints": endpoints,
    }))
    .into_response()
}

/// Every REST call: route, authorise, transcode, call, transcode back.
async fn transcode_call(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::enter();
    let method = request.method().clone();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (route_label, response) = match gateway.table.lookup(&method, request.uri().path()) {
        Lookup::NotFound => (
            "unmatched".to_string(),
            Problem::new(
                StatusCode::NOT_FOUND,
                Code::NotFound,
                format!("no route for {method} {}", request.uri().path()),
            )
            .with_reason("ROUTE_NOT_FOUND")
            .into_response(),
        ),
        Lookup::WrongMethod(allowed) => {
            let mut problem = Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unimplemented,
                format!("{method} is not allowed here"),
            )
            .with_reason("METHOD_NOT_ALLOWED");
            problem.allow = allowed;
            ("unmatched".to_string(), problem.into_response())
        }
        Lookup::Found(route, bindings) => {
            let label = route.template.to_string();
            telemetry::spans::record_http_route(&method, &label);
            let response = match call(&gateway, route, &bindings, request).await {
                Ok(response) => response,
                Err(problem) => problem.into_response(),
            };
            (label, response)
        }
    };
    let mut response = response;
    if response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == problem::PROBLEM_JSON)
    {
        response = attach_request_id(response, request_id).await;
    }
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "route" => route_label.clone(), "method" => method.to_string(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route_label)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Counts a REST call in `http_requests_in_flight` for as long as it runs (also when the
/// client goes away and the call is dropped).
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        metrics::gauge!("http_requests_in_flight").increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("http_requests_in_flight").decrement(1.0);
    }
}

/// Adds `requestId` to a problem body built before the id was at hand.
async fn attach_request_id(response: Response, request_id: Option<String>) -> Response {
    let Some(request_id) = request_id else {
        return response;
    };
    let (parts, body) = response.into_parts();
    let Ok(bytes) = body.collect().await.map(|c| c.to_bytes()) else {
        return Response::from_parts(parts, Body::empty());
    };
    let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    if let Some(object) = json.as_object_mut() {
        object.insert("requestId".into(), request_id.into());
    }
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(json.to_string()))
}

async fn call(
    gateway: &Gateway,
    route: &routes::Route,
    bindings: &[(Vec<String>, String)],
    request: Request,
) -> Result<Response, Problem> {
    let (parts, body) = request.into_parts();
    let edge_key = gateway
        .edge_cache
        .as_ref()
        .and_then(|_| EdgeCache::key(&parts.method, &parts.uri, &parts.headers));
    if let (Some(edge), Some(key)) = (&gateway.edge_cache, &edge_key)
        && let Some(response) = edge.lookup(key, &parts.headers)
    {
        return Ok(response);
    }
    let edge_generation = gateway.edge_cache.as_ref().map_or(0, |e| e.generation());
    let bearer = bearer_token(parts.headers.get(header::AUTHORIZATION));
    let claims = authorize(Some(&route.access), bearer, &gateway.verifier)
        .await
        .map_err(|error| Problem::from_status(&tonic::Status::from(error)))?;
    let service = route.method.parent_service().full_name().to_string();
    let priority = Priority::of(
        claims.as_ref().map(|c| c.tier.as_str()),
        claims.as_ref().map(|c| c.role.as_str()),
    );
    let Some(_admitted) = gateway.upstreams.admit(&service, priority) else {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "the service is at capacity; retry shortly",
        )
        .with_reason("OVERLOADED");
        problem.retry_after_secs = Some(1);
        return Err(problem);
    };

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
                &service,
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
            &service,
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
    if let (Some(edge), Some(key)) = (&gateway.edge_cache, edge_key)
        && response.status() == StatusCode::OK
        && response.headers().contains_key(header::CACHE_CONTROL)
    {
        let (parts, body) = response.into_parts();
        // The body is one buffer already: collecting it copies nothing.
        let bytes = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let tags = metadata
            .get(duovarsity_common::grpc::CACHE_TAGS)
            .and_then(|v| v.to_str().ok());
        edge.store(key, &parts.headers, &bytes, tags, edge_generation);
        response = Response::from_parts(parts, Body::from(bytes));
    }
    Ok(response)
}

/// Whether an `If-None-Match` header names `etag` (or `*`); weak tags compare equal.
pub(crate) fn if_none_match(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    let Ok(etag) = etag.to_str() else {
        return false;
    };
    let etag = etag.trim_start_matches("W/");
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|value| {
            value
                .split(',')
                .map(|candidate| candidate.trim().trim_start_matches("W/"))
                .any(|candidate| candidate == "*" || candidate == etag)
        })
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
