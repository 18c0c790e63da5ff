//! Calls to the gRPC services, by full service name, with messages as raw bytes: the
//! gateway transcodes with descriptors and never needs the generated types.
//!
//! Each upstream is a tonic `Channel` (HTTP/2, lazily connected). A service may be given a
//! static list of endpoints; the channel then spreads calls over them per request (tower's
//! power-of-two-choices balancer), which a single pinned HTTP/2 connection would not.
//! Discovery of endpoints (DNS, EndpointSlices) plugs in here.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use duovarsity_common::telemetry::spans::GrpcClientTrace;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The largest message the gateway sends or accepts upstream.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024 * 1024;

/// The channels of every upstream service, keyed by full service name.
#[derive(Clone, Default)]
pub struct Upstreams {
    channels: HashMap<String, Channel>,
}

impl Upstreams {
    /// Routes `service` (e.g. `duovarsity.user.v1.UserService`) to `urls`: one endpoint,
    /// or several balanced per request.
    pub fn add(&mut self, service: &str, urls: &[String]) -> Result<(), tonic::transport::Error> {
        let mut endpoints = Vec::with_capacity(urls.len());
        for url in urls {
            endpoints.push(
                Endpoint::from_shared(url.clone())?
                    .connect_timeout(Duration::from_secs(3))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(30))
                    .keep_alive_while_idle(true),
            );
        }
        let channel = match endpoints.as_slice() {
            [single] => single.connect_lazy(),
            _ => Channel::balance_list(endpoints.into_iter()),
        };
        self.channels.insert(service.to_string(), channel);
        Ok(())
    }

    pub fn channel(&self, service: &str) -> Option<Channel> {
        self.channels.get(service).cloned()
    }

    /// A ready client of `service` and the request for `path`, with `metadata` and
    /// the deadline.
    async fn prepare(
        &self,
        service: &str,
        path: &str,
        metadata: MetadataMap,
        timeout: Duration,
        message: Vec<u8>,
    ) -> Result<CallParts, Status> {
        let channel = self.channel(service).ok_or_else(|| {
            Status::unimplemented(format!("no upstream is configured for {service}"))
        })?;
        // Media bodies are larger than tonic's 4 MiB default; the gateway's own body limits
        // bound what reaches here.
        let mut grpc = tonic::client::Grpc::new(GrpcClientTrace::new(channel))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("{service} is unreachable: {e}")))?;
        let path = http::uri::PathAndQuery::try_from(path)
            .map_err(|_| Status::internal("invalid method path"))?;
        let mut request = tonic::Request::new(Bytes::from(message));
        *request.metadata_mut() = metadata;
        request.set_timeout(timeout);
        Ok((grpc, path, request))
    }

    /// One unary call: `path` is `/package.Service/Method`.
    pub async fn unary(
        &self,
        service: &str,
        path: &str,
        metadata: MetadataMap,
        timeout: Duration,
        message: Vec<u8>,
    ) -> Result<(MetadataMap, Bytes), Status> {
        let (mut grpc, path, request) = self
            .prepare(service, path, metadata, timeout, message)
            .await?;
        let response = grpc
            .unary(request, path, RawCodec)
            .await
            .map_err(|status| reachable(service, status))?;
        let (metadata, body, _) = response.into_parts();
        Ok((metadata, body))
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
        let (mut grpc, path, request) = self
            .prepare(service, path, metadata, timeout, message)
            .await?;
        let response = grpc
            .server_streaming(request, path, RawCodec)
            .await
            .map_err(|status| reachable(service, status))?;
        let (metadata, stream, _) = response.into_parts();
        Ok((metadata, stream))
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

/// A ready client, the method's path and the request.
type CallParts = (
    tonic::client::Grpc<GrpcClientTrace<Channel>>,
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
