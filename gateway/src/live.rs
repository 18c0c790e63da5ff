//! `GET /v1/ws`: live notifications over WebSocket.
//!
//! The access token is checked at the upgrade (an `Authorization: Bearer` header, or
//! `?access_token=` since browsers cannot set headers on a WebSocket); a bad or expired
//! token gets a 401 problem instead of a socket. The gateway then opens the notification
//! service's `StreamNotifications` with the caller's token and forwards each `LiveEvent`
//! as a JSON text frame: `{"notification": {...}}` (the same JSON as
//! `GET /v1/notifications`) or `{"progress": {...}}` (a lesson progress change).
//! `?after=<seq>` resumes after the last notification sequence number a client saw, so a
//! reconnect loses no notification and repeats none.
//!
//! Heartbeats: the gateway pings every `live_ping_secs` (15 s) and closes a connection that
//! has not answered for three intervals. A client that stops reading is disconnected when one frame cannot be written
//! within 5 s or more than 1 MiB waits for it, so a slow reader costs a bounded buffer,
//! not growing memory. Clients may send only small messages (16 KiB).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use duovarsity_common::auth::bearer_token;
use duovarsity_proto::notification::notification_service_client::NotificationServiceClient;
use duovarsity_proto::notification::{LiveEvent, StreamNotificationsRequest};
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode, header};
use prost::Message as _;
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde::Deserialize;
use tonic::Code;

use crate::Gateway;
use crate::problem::Problem;

pub const NOTIFICATION_SERVICE: &str = "duovarsity.notification.v1.NotificationService";
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// Clients only answer pings and close: a read buffer this small grows only for a larger
/// message (up to [`MAX_INBOUND_MESSAGE`]). At 4 KiB it was 4 of the 28 KiB an idle
/// connection cost.
const READ_BUFFER: usize = 512;
/// Bytes that may wait for a client that reads slowly; beyond it the socket is closed.
const MAX_QUEUED_BYTES: usize = 1024 * 1024;
const MAX_INBOUND_MESSAGE: usize = 16 * 1024;

#[derive(Debug, Deserialize)]
pub struct LiveQuery {
    access_token: Option<String>,
    #[serde(default)]
    after: i64,
}

pub async fn websocket(
    State(gateway): State<Arc<Gateway>>,
    Query(query): Query<LiveQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let token = bearer_token(headers.get(header::AUTHORIZATION))
        .map(str::to_string)
        .or(query.access_token);
    let Some(token) = token else {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            Code::Unauthenticated,
            "connect with an access token",
        )
        .with_reason("TOKEN_MISSING")
        .into_response();
    };
    if let Err(error) = gateway.verifier.verify(&token).await {
        return Problem::from_status(&tonic::Status::from(error)).into_response();
    }
    let Some(channel) = gateway.upstreams.channel(NOTIFICATION_SERVICE) else {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "live notifications are not configured",
        )
        .into_response();
    };
    // The stream opens before the upgrade, so a refusal (too many connections, the
    // service down) is an HTTP answer the client can read, not a socket that closes.
    let mut client = NotificationServiceClient::new(channel);
    let mut request = tonic::Request::new(StreamNotificationsRequest {
        after_seq: query.after.max(0),
    });
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    let stream = match client.stream_notifications(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Problem::from_status(&status).into_response(),
    };
    let closing = gateway.live_shutdown.clone();
    let ping_every = gateway.live_ping;
    // Idle sockets are the common case: small buffers that grow only while a frame is in
    // flight, tiny inbound messages (clients only answer pings), and a hard cap on what
    // may wait for a slow reader.
    let upgrade = upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_QUEUED_BYTES)
        .max_message_size(MAX_INBOUND_MESSAGE)
        .max_frame_size(MAX_INBOUND_MESSAGE);
    upgrade.on_upgrade(move |socket| relay(socket, stream, closing, ping_every))
}

async fn relay(
    socket: WebSocket,
    mut stream: tonic::Streaming<LiveEvent>,
    closing: tokio_util::sync::CancellationToken,
    ping_every: Duration,
) {
    let (mut sink, mut source) = socket.split();
    metrics::gauge!("websocket_connections").increment(1.0);
    let mut ping = tokio::time::interval(ping_every);
    let mut last_heard = Instant::now();
    loop {
        tokio::select! {
            () = closing.cancelled() => break,
            item = stream.message() => {
                let frame = match item {
                    Ok(Some(event)) => json(&event),
                    _ => break,
                };
                match tokio::time::timeout(WRITE_DEADLINE, sink.send(Message::Text(frame.into()))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break,
                    Err(_) => {
                        tracing::info!("closing a WebSocket whose client stopped reading");
                        metrics::counter!("websocket_slow_disconnects_total").increment(1);
                        break;
                    }
                }
            }
            incoming = source.next() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => last_heard = Instant::now(),
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > ping_every * 3 {
                    tracing::info!("closing a WebSocket whose client stopped answering pings");
                    metrics::counter!("websocket_dead_disconnects_total").increment(1);
                    break;
                }
                if tokio::time::timeout(WRITE_DEADLINE, sink.send(Message::Ping(Vec::new().into()))).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = tokio::time::timeout(WRITE_DEADLINE, sink.send(Message::Close(None))).await;
    metrics::gauge!("websocket_connections").decrement(1.0);
}

/// The proto3 JSON of a live event, rendered as the REST API renders messages.
fn json(event: &LiveEvent) -> String {
    let descriptor = duovarsity_proto::descriptor_pool()
        .get_message_by_name("duovarsity.notification.v1.LiveEvent")
        .expect("the live event message is in the descriptor set");
    let message = DynamicMessage::decode(descriptor, event.encode_to_vec().as_slice())
        .expect("a live event decodes as itself");
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    let _ = message.serialize_with_options(
        &mut serializer,
        &SerializeOptions::new().skip_default_fields(false),
    );
    String::from_utf8(out).unwrap_or_default()
}
