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
pub mod layers;
pub mod live;
pub mod meters;
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
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use duovarsity_common::auth::{RemoteJwks, TokenVerifier};
use duovarsity_common::cache::CacheHub;
use duovarsity_common::grpc::LocalGrpc;
use duovarsity_common::telemetry;
use duovarsity_config::Config;
use duovarsity_module::Upstream;
use http::{HeaderValue, Method, StatusCode, header};
use tokio_util::sync::CancellationToken;
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use crate::edge::{EdgeLimits, run};
use crate::edge_cache::EdgeCache;
pub use crate::ratelimit::RateLimiter;
use crate::routes::RouteTable;
use crate::upstream::Upstreams;

/// The full name of the user service, whose JWKS verifies tokens.
pub const USER_SERVICE: &str = duovarsity_proto::user::user_service_server::SERVICE_NAME;
/// The package prefix of the platform's own services in the descriptor set.
const PLATFORM_PACKAGE: &str = "duovarsity.";
/// How often an unknown `kid` may trigger a JWKS refetch.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);
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
    /// This gateway's live session and its sockets (None: no notification service).
    live: Option<Arc<live::fanout::Fanout>>,
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
        let live_shutdown = CancellationToken::new();
        let live = upstreams
            .channel(live::NOTIFICATION_SERVICE)
            .map(|channel| live::fanout::Fanout::new(channel, live_shutdown.clone()));
        Ok(Arc::new(Self {
            live,
            table,
            upstreams,
            verifier,
            openapi,
            body_limit: config.body_limit_bytes,
            media_body_limit: config.media_max_bytes,
            body_read_timeout: Duration::from_millis(config.body_read_timeout_ms),
            live_shutdown,
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
            .with_state(self.clone())
            .fallback_service(layers::rest(self));
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
