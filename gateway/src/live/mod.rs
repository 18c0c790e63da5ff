//! `GET /v1/ws`: live notifications, progress and course rooms over WebSocket. Every
//! frame is described in docs/live.md.
//!
//! The access token is checked at the upgrade (an `Authorization: Bearer` header, or
//! `?access_token=` since browsers cannot set headers on a WebSocket); a bad or expired
//! token gets a 401 problem instead of a socket. The socket then joins this gateway's one
//! live session with the notification service ([`fanout`]): the caller's own
//! notifications (`{"notification": {...}}`, resumable with `?after=<seq>`) and progress
//! (`{"progress": {...}}`) arrive without asking, and `{"subscribe": {"topic":
//! "course:<id>"}}` adds a course room (announcements and presence).
//!
//! A socket follows its token: it is closed with code 4401 when the token it was opened
//! (or last renewed) with expires, unless the client sends a fresh token of the same user
//! before then as `{"authenticate": {"accessToken": "..."}}` (answered
//! `{"authenticated": {"expiresAt": <unix seconds>}}`; a token that does not verify closes
//! the socket with 4401, another user's with 4403). The renewed token's role and tier
//! apply to the socket at once.
//!
//! Limits: a user has at most `DUOVARSITY_LIVE_CONNECTIONS_PER_USER` sockets on all
//! gateways; opening one more closes their oldest with 4409. A socket follows at most
//! [`fanout::MAX_TOPICS`] topics and may ask for [`SUBSCRIBE_BURST`] subscriptions at once,
//! then one per second. A client that reads too slowly for its mailbox is closed with
//! 4408 (lagging) and resumes on reconnecting; one that stops answering pings (every
//! `live_ping_secs`, 15 s) for three intervals is closed; one frame that cannot be
//! written within 5 s closes the socket. Clients may send only small messages (16 KiB).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use duovarsity_common::auth::bearer_token;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;
use tonic::Code;

use crate::Gateway;
use crate::problem::Problem;

pub mod fanout;
pub mod frames;
pub mod mailbox;

use fanout::Fanout;
use frames::ClientFrame;
use mailbox::Mailbox;

pub const NOTIFICATION_SERVICE: &str =
    duovarsity_proto::notification::notification_service_server::SERVICE_NAME;
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// Clients only answer pings, subscribe and renew: a read buffer this small grows only for
/// a larger message (up to [`MAX_INBOUND_MESSAGE`]).
const READ_BUFFER: usize = 512;
/// Bytes the WebSocket layer may hold for a client beyond what is being written (the
/// mailbox bounds what waits before it).
const MAX_QUEUED_BYTES: usize = 256 * 1024;
const MAX_INBOUND_MESSAGE: usize = 16 * 1024;
/// Subscriptions a socket may ask for at once; then one per second.
pub const SUBSCRIBE_BURST: f64 = 20.0;
/// Close codes (the 4000-4999 range is the application's): the token expired or did not
/// verify; a renewal with another user's token; the client read too slowly (lagging: it
/// may reconnect and resume); the user opened more sockets than allowed and this was the
/// oldest.
pub const CLOSE_UNAUTHENTICATED: u16 = 4401;
pub const CLOSE_OTHER_USER: u16 = 4403;
pub const CLOSE_LAGGING: u16 = 4408;
pub const CLOSE_REPLACED: u16 = 4409;
/// The gateway is shutting down.
const CLOSE_GOING_AWAY: u16 = 1001;

fn reason_of(code: u16) -> &'static str {
    match code {
        CLOSE_UNAUTHENTICATED => "the access token expired or did not verify",
        CLOSE_OTHER_USER => "the token is another user's",
        CLOSE_LAGGING => "lagging: the client read too slowly; reconnect and resume",
        CLOSE_REPLACED => "too many live connections: this was the oldest",
        _ => "going away",
    }
}

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
    let Some(fanout) = gateway.live.clone() else {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "live notifications are not configured",
        )
        .into_response();
    };
    // Idle sockets are the common case: small buffers that grow only while a frame is in
    // flight, small inbound messages, and a hard cap on what may wait for a slow reader.
    let upgrade = upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_QUEUED_BYTES)
        .max_message_size(MAX_INBOUND_MESSAGE)
        .max_frame_size(MAX_INBOUND_MESSAGE);
    let after = query.after.max(0);
    let (ping, closing) = (gateway.live_ping, gateway.live_shutdown.clone());
    let verifier = gateway.verifier.clone();
    upgrade.on_upgrade(move |socket| async move {
        let (id, mailbox) = fanout.open(&claims.sub, &token, after);
        let session = Session {
            fanout,
            verifier,
            id,
            mailbox,
            user: claims.sub.into(),
            expires: claims.exp,
            budget: SUBSCRIBE_BURST,
            budget_at: Instant::now(),
        };
        session.relay(socket, ping, closing).await;
    })
}

/// One socket: who holds it, its mailbox, and its subscription budget.
struct Session {
    fanout: Arc<Fanout>,
    verifier: Arc<duovarsity_common::auth::TokenVerifier>,
    id: Arc<str>,
    mailbox: Arc<Mailbox>,
    user: Box<str>,
    /// When the token expires (unix seconds).
    expires: u64,
    budget: f64,
    budget_at: Instant,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.fanout.close(&self.id);
    }
}

impl Session {
    /// When the socket's token expires.
    fn expires_at(&self) -> tokio::time::Instant {
        let left = self.expires.saturating_sub(unix_now());
        tokio::time::Instant::now() + Duration::from_secs(left)
    }

    /// Spends one subscription from the budget (refilled at one a second).
    fn spend(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.budget_at).as_secs_f64();
        self.budget = (self.budget + refill).min(SUBSCRIBE_BURST);
        self.budget_at = now;
        if self.budget >= 1.0 {
            self.budget -= 1.0;
            true
        } else {
            false
        }
    }

    /// Acts on a client's text frame: the frame to answer with, or the code to close with.
    async fn on_text(&mut self, text: &str) -> Result<Option<axum::extract::ws::Utf8Bytes>, u16> {
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => frame,
            Err(error) => {
                return Ok(Some(frames::error(
                    None,
                    "BAD_FRAME",
                    &format!("not a frame of docs/live.md: {error}"),
                )));
            }
        };
        match frame {
            ClientFrame::Subscribe(subscribe) => {
                if !self.spend() {
                    return Ok(Some(frames::error(
                        Some(&subscribe.topic),
                        "RATE_LIMITED",
                        "too many subscriptions; wait a second",
                    )));
                }
                match self
                    .fanout
                    .subscribe(&self.id, &subscribe.topic, subscribe.after)
                {
                    Ok(()) => Ok(None),
                    Err(refused) => Ok(Some(frames::error(
                        Some(&subscribe.topic),
                        refused.reason,
                        &refused.message,
                    ))),
                }
            }
            ClientFrame::Unsubscribe(unsubscribe) => {
                self.fanout.unsubscribe(&self.id, &unsubscribe.topic);
                Ok(None)
            }
            ClientFrame::Authenticate { access_token } => {
                let claims = self
                    .verifier
                    .verify(&access_token)
                    .await
                    .map_err(|_| CLOSE_UNAUTHENTICATED)?;
                if *claims.sub != *self.user {
                    return Err(CLOSE_OTHER_USER);
                }
                self.fanout.renew(&self.id, &access_token);
                self.expires = claims.exp;
                metrics::counter!("websocket_renewals_total").increment(1);
                Ok(Some(frames::authenticated(self.expires)))
            }
        }
    }

    async fn relay(
        mut self,
        socket: WebSocket,
        ping_every: Duration,
        closing: tokio_util::sync::CancellationToken,
    ) {
        let (mut sink, mut source) = socket.split();
        metrics::gauge!("websocket_connections").increment(1.0);
        let mut ping = tokio::time::interval(ping_every);
        let mut last_heard = Instant::now();
        let expiry = tokio::time::sleep_until(self.expires_at());
        tokio::pin!(expiry);
        let mailbox = self.mailbox.clone();
        let mut close: Option<u16> = None;
        loop {
            tokio::select! {
                () = closing.cancelled() => {
                    close = Some(CLOSE_GOING_AWAY);
                    break;
                }
                () = &mut expiry => {
                    metrics::counter!("websocket_expired_disconnects_total").increment(1);
                    close = Some(CLOSE_UNAUTHENTICATED);
                    break;
                }
                () = mailbox.ready() => {
                    if let Some(code) = mailbox.close_code() {
                        close = Some(code);
                        break;
                    }
                    let frames = mailbox.take();
                    if frames.is_empty() {
                        continue;
                    }
                    let write = async {
                        for frame in frames {
                            sink.feed(Message::Text(frame)).await?;
                        }
                        sink.flush().await
                    };
                    match tokio::time::timeout(WRITE_DEADLINE, write).await {
                        Ok(Ok(())) => {}
                        // Gone, or more than MAX_QUEUED_BYTES waiting for it.
                        Ok(Err(_)) => {
                            close = Some(CLOSE_LAGGING);
                            break;
                        }
                        Err(_) => {
                            tracing::info!("closing a WebSocket whose client stopped reading");
                            metrics::counter!("websocket_slow_disconnects_total").increment(1);
                            close = Some(CLOSE_LAGGING);
                            break;
                        }
                    }
                }
                incoming = source.next() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(Message::Text(text))) => {
                        last_heard = Instant::now();
                        // Boxed: an idle socket's task does not carry a renewal's state.
                        match Box::pin(self.on_text(text.as_str())).await {
                            Ok(Some(answer)) => {
                                if tokio::time::timeout(WRITE_DEADLINE, sink.send(Message::Text(answer))).await.is_err() {
                                    break;
                                }
                                expiry.as_mut().reset(self.expires_at());
                            }
                            Ok(None) => {}
                            Err(code) => {
                                close = Some(code);
                                break;
                            }
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
        if let Some(code) = close {
            match code {
                CLOSE_LAGGING => metrics::counter!("websocket_lagging_closes_total").increment(1),
                CLOSE_REPLACED => metrics::counter!("websocket_replaced_closes_total").increment(1),
                _ => {}
            }
        }
        let frame = close.map(|code| CloseFrame {
            code,
            reason: reason_of(code).into(),
        });
        let _ = tokio::time::timeout(WRITE_DEADLINE, sink.send(Message::Close(frame))).await;
        metrics::gauge!("websocket_connections").decrement(1.0);
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
