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

mod access;
mod calls;
mod onward;
mod validation;

pub use access::{AuthLayer, AuthService};
pub use calls::{CallTelemetry, CallTelemetryLayer};
pub use onward::{Deadline, Onward, never_sent, overloaded};
pub use validation::{ValidateLayer, ValidateService};

use std::convert::Infallible;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::{Layer, Service};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::health::Probe;

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
        // Nagle off on every accepted connection: the builder's `tcp_nodelay` applies only
        // to listeners it binds itself, and with Nagle a small answer waited for the
        // client's delayed ACK (direct gRPC calls measured p50 6 ms against 1 ms of work
        // in scripts/bench-discovery.sh).
        let incoming = TcpListenerStream::new(listener).map(|accepted| {
            accepted.and_then(|stream| {
                stream.set_nodelay(true)?;
                Ok(stream)
            })
        });
        let server = Server::builder()
            .accept_http1(true)
            .layer(layers)
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await });
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
