//! The gRPC server kit: every service process serves its tonic services through
//! [`GrpcServer`], which adds what operators and the platform expect of any server:
//!
//! - `grpc.health.v1.Health`, reporting SERVING only while every readiness probe passes
//!   (probes rerun every few seconds, so a lost database flips the status back), and
//!   `liveness` SERVING while the process runs (for liveness probes);
//! - server reflection v1 and v1alpha over the platform's descriptor set, so
//!   `grpcurl -plaintext HOST:PORT list` works without proto files;
//! - `GET /metrics` (Prometheus text) on the same port, over HTTP/1.1;
//! - tower layers: `x-request-id` (generated when absent, echoed back), a tracing span per
//!   call that continues the caller's W3C trace, call metrics (and the caller's
//!   `grpc-timeout` kept as a [`Deadline`], which [`Onward`] calls carry on), and the auth
//!   layer that enforces the `access` method options;
//! - graceful shutdown: on cancellation the listener closes, in-flight calls finish, and
//!   after the grace period the server stops regardless.

mod onward;

use onward::parse_grpc_timeout;
pub use onward::{Deadline, Onward, never_sent, overloaded};

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::{Layer, Service};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::auth::{AccessPolicy, TokenVerifier, authorize, bearer_token};
use crate::health::Probe;
use crate::telemetry;

/// The health entry a liveness probe asks for (`grpc.health.v1` service `liveness`):
/// SERVING while the server runs, whatever its dependencies say.
pub const LIVENESS: &str = "liveness";

/// How often readiness probes rerun.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// The platform's gRPC services as an in-process tower service, behind the same layers
/// as on the wire (request ids, telemetry, auth, validation): in embedded mode the gateway
/// calls them with no socket in between.
pub type LocalGrpc = tower::util::BoxCloneSyncService<
    http::Request<tonic::body::Body>,
    http::Response<tonic::body::Body>,
    CallError,
>;

/// Why a call through a boxed transport ([`LocalGrpc`]) failed: the transport's error,
/// which stays reachable as the source (tonic finds connection errors there).
#[derive(Debug)]
pub struct CallError(pub tower::BoxError);

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Collects services, then serves them on one listener.
pub struct GrpcServer {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    probes: Vec<Probe>,
    auth: AuthLayer,
    local: Option<tokio::sync::oneshot::Sender<LocalGrpc>>,
}

impl GrpcServer {
    pub fn new(auth: AuthLayer) -> Self {
        Self {
            routes: RoutesBuilder::default(),
            names: Vec::new(),
            probes: Vec::new(),
            auth,
            local: None,
        }
    }

    /// The services in process, handed over once [`GrpcServer::run`] has assembled them.
    pub fn local(&mut self) -> tokio::sync::oneshot::Receiver<LocalGrpc> {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        self.local = Some(sender);
        receiver
    }

    /// Adds a tonic service; health reports it by its full name.
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Adds a readiness probe (a database ping, an upstream check).
    pub fn probe(mut self, probe: Probe) -> Self {
        self.probes.push(probe);
        self
    }

    /// Serves until `shutdown` is cancelled, then drains for at most `grace`.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Result<(), tonic::transport::Error> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        // Both reflection versions list every service, including each other, whichever
        // one a client (grpcurl, grpcui, Postman) speaks.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(duovarsity_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                )
                .include_reflection_service(false)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .expect("the platform descriptor set is valid");
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .expect("the platform descriptor set is valid");

        let mut routes = self.routes;
        routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);
        let routes = routes.routes();

        let names = self.names;
        for name in &names {
            reporter
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        // Liveness says only that the process answers: a lost database must make a pod
        // unready, not restart it.
        reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        let watcher = tokio::spawn(watch_readiness(
            reporter,
            names,
            self.probes,
            shutdown.clone(),
        ));

        let layers = tower::ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(CallTelemetryLayer)
            .layer(self.auth)
            .layer(ValidateLayer::new())
            .into_inner();
        if let Some(local) = self.local {
            let service = tower::ServiceExt::map_err(
                layers.clone().layer(routes.clone()),
                |never: Infallible| -> CallError { match never {} },
            );
            let _ = local.send(LocalGrpc::new(service));
        }

        let stop = shutdown.clone();
        let server = Server::builder()
            .accept_http1(true)
            .layer(layers)
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                stop.cancelled().await
            });
        let result = tokio::select! {
            result = server => result,
            () = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "gRPC calls still running after the grace period; stopping");
                Ok(())
            }
        };
        watcher.abort();
        result
    }
}

async fn watch_readiness(
    reporter: HealthReporter,
    names: Vec<&'static str>,
    probes: Vec<Probe>,
    shutdown: CancellationToken,
) {
    let mut last = None;
    loop {
        let mut failure = None;
        for probe in &probes {
            if let Err(error) = probe().await {
                failure = Some(error);
                break;
            }
        }
        let status = if failure.is_none() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        if last != Some(status) {
            match &failure {
                Some(error) => tracing::warn!(%error, "not ready"),
                None => tracing::info!(services = ?names, "ready"),
            }
            for name in &names {
                reporter.set_service_status(*name, status).await;
            }
            reporter.set_service_status("", status).await;
            last = Some(status);
        }
        tokio::select! {
            () = shutdown.cancelled() => {
                for name in &names {
                    reporter.set_service_status(*name, ServingStatus::NotServing).await;
                }
                reporter.set_service_status("", ServingStatus::NotServing).await;
                return;
            }
            () = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

/// Enforces the `duovarsity.options.v1.access` option of every method and hands verified
/// [`crate::auth::Claims`] to handlers through the request extensions.
#[derive(Clone)]
pub struct AuthLayer {
    state: Arc<AuthState>,
}

struct AuthState {
    verifier: Arc<TokenVerifier>,
    policy: AccessPolicy,
}

impl AuthLayer {
    pub fn new(verifier: Arc<TokenVerifier>) -> Self {
        Self {
            state: Arc::new(AuthState {
                verifier,
                policy: AccessPolicy::from_pool(duovarsity_proto::descriptor_pool()),
            }),
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    state: Arc<AuthState>,
}

impl<S, B, R> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is the one that was driven to readiness (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(async move {
            let access = state.policy.lookup(request.uri().path());
            let bearer = bearer_token(request.headers().get(http::header::AUTHORIZATION));
            match authorize(access, bearer, &state.verifier).await {
                Ok(claims) => {
                    if let Some(claims) = claims {
                        request.extensions_mut().insert(claims);
                    }
                    inner.call(request).await
                }
                Err(error) => Ok(tonic::Status::from(error).into_http()),
            }
        })
    }
}

/// Checks every request against the protovalidate rules of its message
/// ([`crate::validate::rules`]) before the handler runs: a violation is INVALID_ARGUMENT
/// with BadRequest field violations, which the gateway turns into a 400 problem. Only
/// methods whose request declares rules are buffered and decoded; the others (media
/// uploads among them) stream through untouched.
#[derive(Clone)]
pub struct ValidateLayer {
    methods: Arc<HashMap<String, prost_reflect::MessageDescriptor>>,
}

/// The largest request body the layer buffers to check; larger ones are refused.
const VALIDATED_BODY_LIMIT: usize = 4 * 1024 * 1024;

impl ValidateLayer {
    pub fn new() -> Self {
        let mut methods = HashMap::new();
        for service in duovarsity_proto::descriptor_pool().services() {
            for method in service.methods() {
                let input = method.input();
                if crate::validate::rules::declares_rules(&input) {
                    methods.insert(format!("/{}/{}", service.full_name(), method.name()), input);
                }
            }
        }
        Self {
            methods: Arc::new(methods),
        }
    }
}

impl Default for ValidateLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for ValidateLayer {
    type Service = ValidateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ValidateService {
            inner,
            methods: self.methods.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ValidateService<S> {
    inner: S,
    methods: Arc<HashMap<String, prost_reflect::MessageDescriptor>>,
}

impl<S, R> Service<http::Request<tonic::body::Body>> for ValidateService<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<R>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(input) = self.methods.get(request.uri().path()).cloned() else {
            return Box::pin(inner.call(request));
        };
        Box::pin(async move {
            use http_body_util::BodyExt as _;
            let (parts, body) = request.into_parts();
            let bytes = match http_body_util::Limited::new(body, VALIDATED_BODY_LIMIT)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(error) => {
                    let status = tonic::Status::resource_exhausted(format!(
                        "the request could not be read (at most {VALIDATED_BODY_LIMIT} bytes): {error}"
                    ));
                    return Ok(status.into_http());
                }
            };
            // One uncompressed gRPC frame: flag, big-endian length, message. Anything else
            // goes on to tonic, which answers it as it always does.
            if let Some(message) = single_frame(&bytes)
                && let Ok(decoded) = prost_reflect::DynamicMessage::decode(input, message)
            {
                let violations = crate::validate::rules::violations(&decoded);
                if !violations.is_empty() {
                    let status = tonic::Status::from(crate::Error::InvalidArgument(violations));
                    return Ok(status.into_http());
                }
            }
            let body = tonic::body::Body::new(http_body_util::Full::new(bytes));
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

/// The message of a body holding exactly one uncompressed gRPC frame.
fn single_frame(bytes: &[u8]) -> Option<&[u8]> {
    let (&compressed, rest) = bytes.split_first()?;
    let length = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let message = rest.get(4..)?;
    (compressed == 0 && message.len() == length).then_some(message)
}

/// A span and metrics per call: `grpc_server_handled_total{method,code}` and
/// `grpc_server_handling_seconds{method}`.
#[derive(Clone, Copy)]
pub struct CallTelemetryLayer;

impl<S> Layer<S> for CallTelemetryLayer {
    type Service = CallTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallTelemetry { inner }
    }
}

#[derive(Clone)]
pub struct CallTelemetry<S> {
    inner: S,
}

impl<S, B, R> Service<http::Request<B>> for CallTelemetry<S>
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
        if let Some(left) = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| parse_grpc_timeout(value.as_bytes()))
        {
            request
                .extensions_mut()
                .insert(Deadline(Instant::now() + left));
        }
        let method = request.uri().path().to_string();
        let span = telemetry::spans::grpc_server(&request);
        let started = Instant::now();
        let future = {
            let _entered = span.enter();
            // One admission to the database pools per call (crate::db::admission).
            crate::db::admission::request(self.inner.call(request))
        };
        Box::pin(tracing::Instrument::instrument(
            async move {
                let result = future.await;
                // Unary errors are trailers-only responses, so the status is in the headers.
                let code = match &result {
                    Ok(response) => telemetry::spans::grpc_status_of(response),
                    Err(_) => tonic::Code::Unknown,
                };
                telemetry::spans::record_grpc_status(&tracing::Span::current(), code, true);
                let elapsed = started.elapsed();
                metrics::counter!("grpc_server_handled_total", "method" => method.clone(), "code" => format!("{code:?}")).increment(1);
                metrics::histogram!("grpc_server_handling_seconds", "method" => method)
                    .record(elapsed.as_secs_f64());
                tracing::debug!(
                    ?code,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "call finished"
                );
                result
            },
            span,
        ))
    }
}

/// The response metadata naming the cache entries a response was built from.
pub const CACHE_TAGS: &str = "cache-tags";

/// Marks `response` for HTTP caching at the gateway: `etag` (quoted here),
/// `cache-control`, and [`CACHE_TAGS`], the cache entries it was built from
/// (`cache=key`, comma-separated), so that an edge cache drops it when one of them is
/// invalidated.
pub fn http_cacheable<T>(
    response: &mut tonic::Response<T>,
    etag: &str,
    cache_control: &'static str,
    tags: &[(&str, &str)],
) {
    let metadata = response.metadata_mut();
    if let Ok(value) = tonic::metadata::MetadataValue::try_from(format!("\"{etag}\"")) {
        metadata.insert("etag", value);
    }
    metadata.insert(
        "cache-control",
        tonic::metadata::MetadataValue::from_static(cache_control),
    );
    let tags: Vec<String> = tags
        .iter()
        .map(|(cache, key)| format!("{cache}={key}"))
        .collect();
    if !tags.is_empty()
        && let Ok(value) = tonic::metadata::MetadataValue::try_from(tags.join(","))
    {
        metadata.insert(CACHE_TAGS, value);
    }
}
