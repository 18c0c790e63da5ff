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
//! A socket follows its token: it is closed with code 4401 when the token it was opened
//! (or last renewed) with expires, unless the client sends a fresh token of the same user
//! before then as a text frame `{"authenticate": {"accessToken": "..."}}` (answered
//! `{"authenticated": {"expiresAt": <unix seconds>}}`; a token that does not verify closes
//! the socket with 4401, another user's with 4403). A renewed socket re-opens its upstream
//! stream with the new token after the last notification delivered, so a role or tier
//! changed since (carried by the fresh token) applies to the socket at once, and no
//! notification is lost or repeated.
//!
//! Heartbeats: the gateway pings every `live_ping_secs` (15 s) and closes a connection that
//! has not answered for three intervals. A client that stops reading is disconnected when one frame cannot be written
//! within 5 s or more than 1 MiB waits for it, so a slow reader costs a bounded buffer,
//! not growing memory. Clients may send only small messages (16 KiB).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use duovarsity_common::auth::{Claims, bearer_token};
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

pub const NOTIFICATION_SERVICE: &str =
    duovarsity_proto::notification::notification_service_server::SERVICE_NAME;
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// Clients only answer pings and close: a read buffer this small grows only for a larger
/// message (up to [`MAX_INBOUND_MESSAGE`]). At 4 KiB it was 4 of the 28 KiB an idle
/// connection cost.
const READ_BUFFER: usize = 512;
/// Bytes that may wait for a client that reads slowly; beyond it the socket is closed.
const MAX_QUEUED_BYTES: usize = 1024 * 1024;
const MAX_INBOUND_MESSAGE: usize = 16 * 1024;
/// Close codes (the 4000-4999 range is the application's): the token expired or did not
/// verify, and a renewal with another user's token.
pub const CLOSE_UNAUTHENTICATED: u16 = 4401;
pub const CLOSE_OTHER_USER: u16 = 4403;

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
    let claims = match gateway.verifier.verify(&token).await {
        Ok(claims) => claims,
        Err(error) => return Problem::from_status(&tonic::Status::from(error)).into_response(),
    };
    // The stream opens before the upgrade, so a refusal (too many connections, the
    // service down) is an HTTP answer the client can read, not a socket that closes.
    let stream = match open_stream(&gateway, &token, query.after.max(0)).await {
        Ok(stream) => stream,
        Err(problem) => return problem.into_response(),
    };
    let session = Session {
        gateway: gateway.clone(),
        claims,
        last_seq: query.after.max(0),
    };
    // Idle sockets are the common case: small buffers that grow only while a frame is in
    // flight, tiny inbound messages (clients only answer pings), and a hard cap on what
    // may wait for a slow reader.
    let upgrade = upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_QUEUED_BYTES)
        .max_message_size(MAX_INBOUND_MESSAGE)
        .max_frame_size(MAX_INBOUND_MESSAGE);
    upgrade.on_upgrade(move |socket| relay(socket, stream, session))
}

/// The notification service's live stream for the holder of `token`, after `after_seq`.
async fn open_stream(
    gateway: &Gateway,
    token: &str,
    after_seq: i64,
) -> Result<tonic::Streaming<LiveEvent>, Problem> {
    let Some(channel) = gateway.upstreams.channel(NOTIFICATION_SERVICE) else {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "live notifications are not configured",
        ));
    };
    let mut request = tonic::Request::new(StreamNotificationsRequest { after_seq });
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    NotificationServiceClient::new(channel)
        .stream_notifications(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| Problem::from_status(&status))
}

/// Who a socket serves, until when, and where its stream stands.
struct Session {
    gateway: Arc<Gateway>,
    claims: Claims,
    /// The last notification sequence delivered (a renewed stream resumes after it).
    last_seq: i64,
}

/// A client's text frame.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
enum ClientFrame {
    Authenticate {
        #[serde(rename = "accessToken")]
        access_token: String,
    },
}

/// What a renewal asks of the socket.
enum Renewal {
    /// Renewed: the new stream and the acknowledgement to send.
    Renewed(Box<tonic::Streaming<LiveEvent>>, String),
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// Not a frame the socket understands: ignored.
    Ignored,
}

impl Session {
    /// When the socket's token expires.
    fn expires_at(&self) -> tokio::time::Instant {
        let left = self.claims.exp.saturating_sub(unix_now());
        tokio::time::Instant::now() + Duration::from_secs(left)
    }

    async fn renew(&mut self, text: &str) -> Renewal {
        let Ok(ClientFrame::Authenticate { access_token }) = serde_json::from_str(text) else {
            return Renewal::Ignored;
        };
        let claims = match self.gateway.verifier.verify(&access_token).await {
            Ok(claims) => claims,
            Err(_) => return Renewal::Close(CLOSE_UNAUTHENTICATED, "the token did not verify"),
        };
        if claims.sub != self.claims.sub {
            return Renewal::Close(CLOSE_OTHER_USER, "the token is another user's");
        }
        match open_stream(&self.gateway, &access_token, self.last_seq).await {
            Ok(stream) => {
                self.claims = claims;
                metrics::counter!("websocket_renewals_total").increment(1);
                let ack = serde_json::json!({"authenticated": {"expiresAt": self.claims.exp}});
                Renewal::Renewed(Box::new(stream), ack.to_string())
            }
            Err(_) => Renewal::Close(1011, "the live stream could not be renewed"),
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn relay(socket: WebSocket, mut stream: tonic::Streaming<LiveEvent>, mut session: Session) {
    let closing = session.gateway.live_shutdown.clone();
    let ping_every = session.gateway.live_ping;
    let (mut sink, mut source) = socket.split();
    metrics::gauge!("websocket_connections").increment(1.0);
    let mut ping = tokio::time::interval(ping_every);
    let mut last_heard = Instant::now();
    let expiry = tokio::time::sleep_until(session.expires_at());
    tokio::pin!(expiry);
    let mut close: Option<(u16, &'static str)> = None;
    loop {
        tokio::select! {
            () = closing.cancelled() => break,
            () = &mut expiry => {
                metrics::counter!("websocket_expired_disconnects_total").increment(1);
                close = Some((CLOSE_UNAUTHENTICATED, "the access token expired"));
                break;
            }
            item = stream.message() => {
                let frame = match item {
                    Ok(Some(event)) => {
                        if let Some(duovarsity_proto::notification::live_event::Event::Notification(n)) = &event.event {
                            session.last_seq = session.last_seq.max(n.seq);
                        }
                        json(&event)
                    }
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
                Some(Ok(Message::Text(text))) => {
                    last_heard = Instant::now();
                    match session.renew(text.as_str()).await {
                        Renewal::Renewed(renewed, ack) => {
                            stream = *renewed;
                            expiry.as_mut().reset(session.expires_at());
                            if sink.send(Message::Text(ack.into())).await.is_err() {
                                break;
                            }
                        }
                        Renewal::Close(code, reason) => {
                            close = Some((code, reason));
                            break;
                        }
                        Renewal::Ignored => {}
                    }
                }
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
    let frame = close.map(|(code, reason)| CloseFrame {
        code,
        reason: reason.into(),
    });
    let _ = tokio::time::timeout(WRITE_DEADLINE, sink.send(Message::Close(frame))).await;
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
