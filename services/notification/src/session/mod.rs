//! A gateway's live session (`Live`): every socket the gateway holds, the users they
//! belong to and the rooms they follow, on one stream. The session follows each user and
//! room once, however many of the gateway's sockets need it, so a notification or an
//! announcement crosses to a gateway once and the gateway fans it out.
//!
//! Trust: a socket opens with its holder's access token, verified here; a room is joined
//! only after the course service says the holder may be in it; deliveries name the user,
//! socket or room they are for, and the gateway passes them to exactly those sockets. A
//! session with no verified socket receives nothing.
//!
//! Bounds: a session holds at most [`MAX_SOCKETS`] sockets and each socket at most
//! [`MAX_TOPICS`] rooms; a resume replays at most [`RESUME_LIMIT`] entries per topic
//! (older ones: a `gap`); a session that falls behind its signals by
//! [`crate::live::SIGNALS_PER_SESSION`] is ended with UNAVAILABLE (its gateway reopens it
//! and resumes).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use duovarsity_common::Error;
use duovarsity_common::auth::TokenVerifier;
use duovarsity_common::time::now_millis;
use duovarsity_proto::notification::{
    LiveCommand, LiveDelivery, SocketDelivery, live_command, live_delivery, socket_delivery,
};
use futures::{Stream, StreamExt as _};
use tokio::sync::mpsc;
use tonic::Status;
use uuid::Uuid;

use crate::Notifications;
use crate::live::{SessionInbox, Signal};
use crate::rooms::Seat;

mod signals;
mod topics;

/// Rooms one socket may follow at once (`TOO_MANY_TOPICS` beyond).
pub const MAX_TOPICS: usize = 16;
/// Sockets one gateway session may hold.
pub const MAX_SOCKETS: usize = 200_000;
/// Entries a resume replays per topic; a client further behind gets a `gap`.
pub const RESUME_LIMIT: i64 = 100;
/// Presence frames per room: at most one per this interval.
const PRESENCE_EVERY: Duration = Duration::from_secs(1);
/// A session rereads what it follows at least this often even without a signal (a safety
/// net for a signal lost between replicas).
const SAFETY_POLL: Duration = Duration::from_secs(30);
/// Joins being authorized at once per session.
const JOINS_IN_FLIGHT: usize = 256;
/// Deliveries that may wait for the gateway to read them.
const OUTBOUND: usize = 1024;

/// The flag that lets progress frames through.
const LIVE_PROGRESS: &str = "live-progress";

/// A socket: whose it is and its topics (its token is not kept: each join carries the
/// current one).
struct SocketState {
    user: String,
    /// Joined, and asked for (waiting for their turn or the course service's answer).
    topics: HashSet<String>,
    asking: HashSet<String>,
}

struct UserFollow {
    last_seq: i64,
    sockets: u32,
    /// The role and tier of the user's newest token (progress frames follow flags on them).
    role: String,
    tier: String,
}

struct RoomFollow {
    last_seq: i64,
    /// Its sockets, and whether each sits as a learner.
    sockets: HashMap<Uuid, Seat>,
    /// Send the presence at the next tick (a socket joined).
    dirty: bool,
    /// The presence version last sent.
    sent_version: u64,
}

/// A join the course service has answered.
struct JoinAnswer {
    socket: Uuid,
    topic: String,
    after_seq: i64,
    seat: Result<Seat, Error>,
}

struct Session {
    service: Notifications,
    verifier: Arc<TokenVerifier>,
    /// This session's id in the hub and what the hub told it.
    id: u64,
    inbox: Arc<SessionInbox>,
    overflow: tokio_util::sync::CancellationToken,
    out: mpsc::Sender<Result<LiveDelivery, Status>>,
    sockets: HashMap<Uuid, SocketState>,
    users: HashMap<String, UserFollow>,
    rooms: HashMap<String, RoomFollow>,
    joins: mpsc::Sender<JoinAnswer>,
    pending_joins: usize,
    /// Joins waiting for one of the [`JOINS_IN_FLIGHT`] places (a gateway replaying
    /// its sockets asks for thousands at once): at most [`MAX_TOPICS`] per socket.
    waiting: std::collections::VecDeque<(Uuid, String, i64, String)>,
}

/// The session is over (the gateway went away, or it fell behind).
struct Ended;

impl Notifications {
    /// Runs a gateway's session over `commands`; its deliveries come out of the returned
    /// stream.
    pub(crate) fn live_session(
        &self,
        verifier: Arc<TokenVerifier>,
        commands: impl Stream<Item = Result<LiveCommand, Status>> + Send + Unpin + 'static,
    ) -> impl Stream<Item = Result<LiveDelivery, Status>> + Send + 'static {
        let (out, deliveries) = mpsc::channel(OUTBOUND);
        let (joins, answers) = mpsc::channel(JOINS_IN_FLIGHT);
        let inbox = self.live.register();
        let session = Session {
            service: self.clone(),
            verifier,
            id: inbox.id,
            overflow: inbox.overflow.clone(),
            inbox,
            out,
            sockets: HashMap::new(),
            users: HashMap::new(),
            rooms: HashMap::new(),
            joins,
            pending_joins: 0,
            waiting: std::collections::VecDeque::new(),
        };
        tokio::spawn(session.run(commands, answers));
        tokio_stream::wrappers::ReceiverStream::new(deliveries)
    }
}

impl Session {
    async fn run(
        mut self,
        mut commands: impl Stream<Item = Result<LiveCommand, Status>> + Unpin,
        mut answers: mpsc::Receiver<JoinAnswer>,
    ) {
        metrics::gauge!("live_sessions").increment(1.0);
        let mut presence = tokio::time::interval(PRESENCE_EVERY);
        let mut safety = tokio::time::interval(SAFETY_POLL);
        safety.tick().await;
        let (overflow, inbox) = (self.overflow.clone(), self.inbox.clone());
        let stopping = self.service.stopping.clone();
        loop {
            let step = tokio::select! {
                () = overflow.cancelled() => {
                    tracing::warn!("a live session fell behind its signals; ending it so its gateway resumes");
                    let _ = self.out.try_send(Err(Status::unavailable("the live session fell behind; reopen it and resume")));
                    break;
                }
                () = stopping.cancelled() => {
                    let _ = self.out.try_send(Err(Status::unavailable("the notification service is shutting down; reopen the session")));
                    break;
                }
                command = commands.next() => match command {
                    Some(Ok(command)) => self.command(command).await,
                    _ => break,
                },
                Some(answer) = answers.recv() => {
                    self.pending_joins -= 1;
                    let step = self.joined(answer).await;
                    self.next_join();
                    step
                }
                pending = inbox.next() => self.signals(pending).await,
                _ = presence.tick() => self.presence().await,
                _ = safety.tick() => self.signal(Signal::Resync).await,
            };
            if step.is_err() {
                break;
            }
        }
        self.close_all().await;
        metrics::gauge!("live_sessions").decrement(1.0);
    }

    async fn send(&self, delivery: live_delivery::Delivery) -> Result<(), Ended> {
        let delivery = LiveDelivery {
            delivery: Some(delivery),
        };
        tokio::select! {
            sent = self.out.send(Ok(delivery)) => sent.map_err(|_| Ended),
            () = self.overflow.cancelled() => Err(Ended),
        }
    }

    async fn to_socket(&self, socket: Uuid, event: socket_delivery::Event) -> Result<(), Ended> {
        self.send(live_delivery::Delivery::Socket(SocketDelivery {
            socket_id: socket.to_string(),
            event: Some(event),
        }))
        .await
    }

    async fn command(&mut self, command: LiveCommand) -> Result<(), Ended> {
        // Socket ids are UUIDs (16 bytes each in the session's maps); a command naming
        // anything else names no socket.
        let id = |text: &str| Uuid::parse_str(text).ok();
        match command.command {
            Some(live_command::Command::Open(open)) => match id(&open.socket_id) {
                Some(socket) => self.open(socket, &open.access_token, open.after_seq).await,
                None => {
                    let refused = SocketDelivery {
                        socket_id: open.socket_id,
                        event: Some(socket_delivery::Event::Refused(
                            "a socket id must be a new UUID".into(),
                        )),
                    };
                    self.send(live_delivery::Delivery::Socket(refused)).await
                }
            },
            Some(live_command::Command::Close(close)) => {
                if let Some(socket) = id(&close.socket_id) {
                    self.close(socket).await;
                }
                Ok(())
            }
            Some(live_command::Command::Renew(renew)) => match id(&renew.socket_id) {
                Some(socket) => self.renew(socket, renew.access_token).await,
                None => Ok(()),
            },
            Some(live_command::Command::Join(join)) => match id(&join.socket_id) {
                Some(socket) => {
                    self.join(socket, join.topic, join.after_seq, join.access_token)
                        .await
                }
                None => Ok(()),
            },
            Some(live_command::Command::Leave(leave)) => {
                if let Some(socket) = id(&leave.socket_id) {
                    self.leave(socket, &leave.topic).await;
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn open(&mut self, socket: Uuid, token: &str, after_seq: i64) -> Result<(), Ended> {
        if self.sockets.contains_key(&socket) {
            return self
                .to_socket(
                    socket,
                    socket_delivery::Event::Refused("a socket id must be a new UUID".into()),
                )
                .await;
        }
        if self.sockets.len() >= MAX_SOCKETS {
            return self
                .to_socket(
                    socket,
                    socket_delivery::Event::Refused(
                        "this gateway session holds too many sockets".into(),
                    ),
                )
                .await;
        }
        let claims = match self.verifier.verify(token).await {
            Ok(claims) => claims,
            Err(error) => {
                return self
                    .to_socket(socket, socket_delivery::Event::Refused(error.to_string()))
                    .await;
            }
        };
        let user = claims.sub.clone();
        let first = !self.users.contains_key(&user);
        if first {
            // Follow before reading where the inbox stands: a notification committed in
            // between is then both read and signalled, never neither.
            self.service.live.follow(self.id, false, &user);
            let last_seq = self
                .service
                .store
                .last_notification(&user)
                .await
                .unwrap_or(0);
            self.users.insert(
                user.clone(),
                UserFollow {
                    last_seq,
                    sockets: 0,
                    role: String::new(),
                    tier: String::new(),
                },
            );
        }
        let follow = self.users.get_mut(&user).expect("followed above");
        follow.sockets += 1;
        follow.role.clone_from(&claims.role);
        follow.tier.clone_from(&claims.tier);
        let upto = follow.last_seq;
        self.sockets.insert(
            socket,
            SocketState {
                user: user.clone(),
                topics: HashSet::new(),
                asking: HashSet::new(),
            },
        );
        metrics::gauge!("live_sockets").increment(1.0);
        self.resume_inbox(socket, &user, after_seq.max(0), upto)
            .await?;
        for evicted in self.service.live.open_socket(&user, socket).await {
            self.service
                .live
                .signal(Signal::Evict(user.clone(), evicted))
                .await;
        }
        Ok(())
    }

    async fn close(&mut self, socket: Uuid) {
        let Some(state) = self.sockets.remove(&socket) else {
            return;
        };
        metrics::gauge!("live_sockets").decrement(1.0);
        for topic in &state.topics {
            self.leave_room(socket, topic, &state.user).await;
        }
        let user = state.user;
        if let Some(follow) = self.users.get_mut(&user) {
            follow.sockets -= 1;
            if follow.sockets == 0 {
                self.users.remove(&user);
                self.service.live.unfollow(self.id, false, &user);
            }
        }
        self.service.live.close_socket(&user, socket).await;
        if let Err(error) = self.service.store.set_last_seen(&user, now_millis()).await {
            tracing::warn!(%error, "could not record when a user was last seen");
        }
    }

    async fn close_all(&mut self) {
        let sockets: Vec<Uuid> = self.sockets.keys().copied().collect();
        for socket in sockets {
            self.close(socket).await;
        }
        self.service.live.unregister(self.id);
    }

    async fn renew(&mut self, socket: Uuid, token: String) -> Result<(), Ended> {
        let Some(state) = self.sockets.get_mut(&socket) else {
            return Ok(());
        };
        match self.verifier.verify(&token).await {
            Ok(claims) if claims.sub == state.user => {
                if let Some(follow) = self.users.get_mut(&claims.sub) {
                    follow.role.clone_from(&claims.role);
                    follow.tier.clone_from(&claims.tier);
                }
                Ok(())
            }
            _ => {
                self.to_socket(
                    socket,
                    socket_delivery::Event::Refused(
                        "the renewed token did not verify or is another user's".into(),
                    ),
                )
                .await
            }
        }
    }
}
