//! Calls to the gRPC services, by full service name, with messages as raw bytes: the
//! gateway transcodes with descriptors and never needs the generated types.
//!
//! Each upstream is a pool of endpoints, one lazily connected HTTP/2 channel each, and
//! calls are balanced per request with outlier ejection ([`crate::balance`]); a single
//! pinned HTTP/2 connection would not spread load. A call of a method the proto marks
//! idempotent that fails to reach a replica (transport error or UNAVAILABLE) is sent once
//! more, to another endpoint, within the remaining deadline and a retry budget
//! (tower's `TpsBudget`). A replica that refuses at capacity (reason `OVERLOADED`) is busy, not
//! broken: it is never ejected for it. Endpoints are the fixed list of `DUOVARSITY_<NAME>_SERVICE_URL`, or
//! what discovery reports ([`duovarsity_common::discovery`]: DNS or EndpointSlices). In
//! embedded mode an upstream's one endpoint is the services of this process, called in
//! process ([`Upstreams::add_local`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use duovarsity_common::grpc::{never_sent, overloaded};

use crate::lag::{Admitted, Governor};
pub use crate::priority::Priority;
use duovarsity_common::telemetry::spans::GrpcClientTrace;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use duovarsity_common::discovery::{self, Source};
use tokio::sync::watch;
use tower::retry::budget::{Budget as _, TpsBudget};

use crate::balance::{EndpointState, Pool, Transport, remote};

/// The largest message the gateway sends or accepts upstream.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024 * 1024;

/// Retries spend from tower's retry budget, which calls fill: a fifth of a retry per call
/// over the last ten seconds, plus a floor of ten per second. A failing upstream therefore
/// sees at most about 20 % more calls, never a retry storm.
fn retry_budget() -> TpsBudget {
    TpsBudget::new(Duration::from_secs(10), 10, 0.2)
}

/// A call admitted by [`Upstreams::admit`], counted by the governor until dropped.
pub struct Admission {
    _running: Option<Admitted>,
}

/// The upstream services, keyed by full service name.
#[derive(Clone)]
pub struct Upstreams {
    /// Balanced channels for long-lived users (the JWKS fetcher, live streams).
    channels: HashMap<String, Channel>,
    /// Endpoint pools for request traffic.
    pools: HashMap<String, Arc<Pool>>,
    budget: Arc<TpsBudget>,
    /// Calls in flight one upstream may have from this gateway (0: unlimited).
    max_in_flight: usize,
    governor: Option<Governor>,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self {
            channels: HashMap::new(),
            pools: HashMap::new(),
            budget: Arc::new(retry_budget()),
            max_in_flight: 0,
            governor: None,
        }
    }
}

impl Upstreams {
    /// Routes `service` (e.g. `duovarsity.user.v1.UserService`) to `urls`: one endpoint,
    /// several balanced per request, or `dns:///HOST:PORT`, whose addresses (a headless
    /// Service's ready pods) are resolved now and every few seconds.
    pub fn add(
        &mut self,
        service: &str,
        urls: &[String],
        kubernetes_api: Option<&str>,
    ) -> Result<(), tonic::transport::Error> {
        let source = discovery::Source::parse(urls).unwrap_or(Source::Static(urls.to_vec()));
        if !source.is_static() {
            // Long-lived users get a channel balanced over the same endpoints; requests
            // are balanced per call over the pool, which follows them.
            let endpoints = discovery::follow(source, kubernetes_api);
            self.channels.insert(
                service.to_string(),
                discovery::balanced(endpoints.clone(), configure),
            );
            let pool = Arc::new(Pool::new(service, Vec::new()));
            tokio::spawn(follow_endpoints(Arc::downgrade(&pool), endpoints));
            self.pools.insert(service.to_string(), pool);
            return Ok(());
        }
        let endpoints = urls
            .iter()
            .map(|url| endpoint(url))
            .collect::<Result<Vec<_>, _>>()?;
        let channel = match endpoints.as_slice() {
            [single] => single.connect_lazy(),
            _ => Channel::balance_list(endpoints.clone().into_iter()),
        };
        self.channels.insert(service.to_string(), channel);
        let states = urls
            .iter()
            .zip(endpoints)
            .map(|(url, endpoint)| EndpointState::new(url.clone(), remote(endpoint.connect_lazy())))
            .collect();
        self.pools
            .insert(service.to_string(), Arc::new(Pool::new(service, states)));
        Ok(())
    }

    /// Routes `service` to the services of this process (embedded mode): calls go through
    /// the server's layers with no socket; `url` is this process's own gRPC address, which
    /// long-lived users (the JWKS fetcher, live streams) still dial.
    pub fn add_local(
        &mut self,
        service: &str,
        url: &str,
        local: Transport,
    ) -> Result<(), tonic::transport::Error> {
        self.channels
            .insert(service.to_string(), endpoint(url)?.connect_lazy());
        let pool = Pool::new(service, vec![EndpointState::new(url.to_string(), local)]);
        self.pools.insert(service.to_string(), Arc::new(pool));
        Ok(())
    }

    pub fn channel(&self, service: &str) -> Option<Channel> {
        self.channels.get(service).cloned()
    }

    /// A ready client on `channel` and the request for `path`, with `metadata` and the
    /// deadline.
    async fn prepare(
        transport: Transport,
        service: &str,
        path: &str,
        metadata: MetadataMap,
        timeout: Duration,
        message: Bytes,
    ) -> Result<CallParts, Status> {
        // Media bodies are larger than tonic's 4 MiB default; the gateway's own body limits
        // bound what reaches here.
        let mut grpc = tonic::client::Grpc::new(GrpcClientTrace::new(transport))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("{service} is unreachable: {e}")))?;
        let path = http::uri::PathAndQuery::try_from(path)
            .map_err(|_| Status::internal("invalid method path"))?;
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = metadata;
        request.set_timeout(timeout);
        Ok((grpc, path, request))
    }

    /// Caps the calls in flight per upstream at `max` (shared out by [`Priority`]).
    pub fn set_max_in_flight(&mut self, max: usize) {
        self.max_in_flight = max;
    }

    /// Caps the calls started at once by `governor` as well (see [`crate::lag`]).
    pub fn govern(&mut self, governor: Governor) {
        self.governor = Some(governor);
    }

    /// Whether a call of `priority` to `service` may start now: `Some` while it runs, or
    /// `None` when it is shed, counted in `gateway_shed_total{cause}`: `in_flight` past
    /// the upstream's share for the priority, `cpu` past the priority's share of the
    /// governor's cap.
    pub fn admit(&self, service: &str, priority: Priority) -> Option<Admission> {
        let Some(pool) = self.pools.get(service) else {
            return Some(Admission { _running: None });
        };
        let cause = if self.max_in_flight > 0
            && pool.in_flight() >= (self.max_in_flight as f64 * priority.share()).ceil() as usize
        {
            "in_flight"
        } else {
            match &self.governor {
                None => return Some(Admission { _running: None }),
                Some(governor) => match governor.admit(priority.share()) {
                    Some(admitted) => {
                        return Some(Admission {
                            _running: Some(admitted),
                        });
                    }
                    None => "cpu",
                },
            }
        };
        metrics::counter!("gateway_shed_total", "service" => service.to_string(), "priority" => priority.as_str(), "cause" => cause)
            .increment(1);
        None
    }

    pub(crate) fn pool(&self, service: &str) -> Result<&Arc<Pool>, Status> {
        self.pools.get(service).ok_or_else(|| {
            Status::unimplemented(format!("no upstream is configured for {service}"))
        })
    }

    /// One unary call: `path` is `/package.Service/Method`. An `idempotent` call that
    /// cannot reach its replica is retried once on another, within `timeout` overall.
    pub async fn unary(
        &self,
        service: &str,
        path: &str,
        metadata: MetadataMap,
        timeout: Duration,
        message: Vec<u8>,
        idempotent: bool,
    ) -> Result<(MetadataMap, Bytes), Status> {
        let pool = self.pool(service)?;
        let started = Instant::now();
        let message = Bytes::from(message);
        let mut avoid: Option<String> = None;
        loop {
            let call = pool
                .pick(avoid.as_deref())
                .ok_or_else(|| no_endpoints(service))?;
            let left = timeout.saturating_sub(started.elapsed());
            let attempt = async {
                let (mut grpc, path, request) = Self::prepare(
                    call.transport(),
                    service,
                    path,
                    metadata.clone(),
                    left,
                    message.clone(),
                )
                .await?;
                grpc.unary(request, path, RawCodec)
                    .await
                    .map_err(|status| reachable(service, status))
            };
            // The server honours grpc-timeout; this bounds a server that does not answer.
            let answer = tokio::time::timeout(left, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(Status::deadline_exceeded(format!(
                        "{service} did not answer in time"
                    )))
                });
            match answer {
                Ok(response) => {
                    call.finish(false);
                    self.budget.deposit();
                    let (metadata, body, _) = response.into_parts();
                    return Ok((metadata, body));
                }
                Err(status) => {
                    // tonic servers answer an expired grpc-timeout with CANCELLED: to the
                    // client it is the deadline that passed.
                    let status = if status.code() == Code::Cancelled
                        && started.elapsed() + Duration::from_millis(20) >= timeout
                    {
                        Status::deadline_exceeded(format!("{service} did not answer in time"))
                    } else if status.code() == Code::Cancelled {
                        // Not the deadline: the connection closed under the call (a
                        // replica that died), which is as retryable as not reaching it.
                        Status::unavailable(format!("{service} dropped the call"))
                    } else {
                        status
                    };
                    // A replica that refused at capacity is busy, not broken: it stays in
                    // the pool, and only a read goes elsewhere.
                    let busy = overloaded(&status);
                    let unreached = status.code() == Code::Unavailable && !busy;
                    let url = call.url().to_string();
                    call.finish(unreached);
                    // A write is retried only when it never left: the connection was
                    // refused (a replica restarting), so the server cannot have applied it.
                    let retry = ((unreached && (idempotent || never_sent(&status)))
                        || (busy && idempotent))
                        && avoid.is_none()
                        && pool.len() > 1
                        && started.elapsed() < timeout
                        && self.budget.withdraw();
                    if !retry {
                        return Err(status);
                    }
                    metrics::counter!("gateway_retries_total", "service" => service.to_string())
                        .increment(1);
                    tracing::debug!(service, endpoint = %url, "retrying an idempotent call on another endpoint");
                    avoid = Some(url);
                }
            }
        }
    }

    /// One server-streaming call: the response metadata and the stream of encoded
    /// messages.
    pub async fn server_streaming(
        &self,
        service: &str,
        path: &str,
        metadata: MetadataMap,
        timeout: Duration,
        message: Vec<u8>,
    ) -> Result<(MetadataMap, tonic::Streaming<Bytes>), Status> {
        let pool = self.pool(service)?;
        let call = pool.pick(None).ok_or_else(|| no_endpoints(service))?;
        let answer = async {
            let (mut grpc, path, request) = Self::prepare(
                call.transport(),
                service,
                path,
                metadata,
                timeout,
                Bytes::from(message),
            )
            .await?;
            grpc.server_streaming(request, path, RawCodec)
                .await
                .map_err(|status| reachable(service, status))
        }
        .await;
        call.finish(
            answer
                .as_ref()
                .is_err_and(|s| s.code() == Code::Unavailable && !overloaded(s)),
        );
        let (metadata, stream, _) = answer?.into_parts();
        Ok((metadata, stream))
    }

    /// Each upstream's endpoints and whether they are ejected now.
    pub fn endpoints(&self) -> BTreeMap<String, Vec<(String, bool)>> {
        self.pools
            .iter()
            .map(|(service, pool)| (service.clone(), pool.states()))
            .collect()
    }

    /// Each upstream's health (`SERVING`, or why not), checked at once with a 2 s
    /// deadline; also published as `gateway_upstream_up{service}`.
    pub async fn health(&self) -> BTreeMap<String, String> {
        let checks = self.channels.iter().map(|(service, channel)| async move {
            let mut client = HealthClient::new(channel.clone());
            let request = tonic::Request::new(HealthCheckRequest {
                service: service.clone(),
            });
            let answer = tokio::time::timeout(Duration::from_secs(2), client.check(request)).await;
            let state = match answer {
                Ok(Ok(response)) => match ServingStatus::try_from(response.get_ref().status) {
                    Ok(status) => status.as_str_name().to_string(),
                    Err(_) => format!("unknown status {}", response.get_ref().status),
                },
                Ok(Err(status)) => status.message().to_string(),
                Err(_) => "health check timed out".to_string(),
            };
            let up = if state == "SERVING" { 1.0 } else { 0.0 };
            metrics::gauge!("gateway_upstream_up", "service" => service.clone()).set(up);
            (service.clone(), state)
        });
        futures::future::join_all(checks)
            .await
            .into_iter()
            .collect()
    }
}

fn configure(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
}

fn endpoint(url: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(configure(Endpoint::from_shared(url.to_string())?))
}

/// A lazily connected channel to `url` (None if it is not a valid URI).
fn connect(url: &str) -> Option<Transport> {
    endpoint(url)
        .ok()
        .map(|endpoint| remote(endpoint.connect_lazy()))
}

fn no_endpoints(service: &str) -> Status {
    Status::unavailable(format!("{service} has no endpoints right now"))
}

/// Keeps `pool` on the endpoints discovery reports, until the pool or the discovery is
/// gone.
async fn follow_endpoints(
    pool: std::sync::Weak<Pool>,
    mut endpoints: watch::Receiver<Vec<String>>,
) {
    loop {
        let urls = endpoints.borrow_and_update().clone();
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.update(&urls, connect);
        drop(pool);
        if endpoints.changed().await.is_err() {
            return;
        }
    }
}

/// A ready client, the method's path and the request.
type CallParts = (
    tonic::client::Grpc<GrpcClientTrace<Transport>>,
    http::uri::PathAndQuery,
    tonic::Request<Bytes>,
);

/// A transport failure surfaces as UNKNOWN with a source; the client should see a
/// retryable UNAVAILABLE instead.
fn reachable(service: &str, status: Status) -> Status {
    if status.code() == Code::Unknown && std::error::Error::source(&status).is_some() {
        Status::unavailable(format!("{service} is unreachable"))
    } else {
        status
    }
}

/// Passes already-encoded protobuf bytes through tonic's framing.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
