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
use duovarsity_common::flags::{FlagContext, Flags};
use duovarsity_common::grpc::Onward;
use duovarsity_common::time::now_millis;
use duovarsity_proto::notification::{
    LiveCommand, LiveDelivery, LiveEvent, RoomEvent, SocketDelivery, TopicJoined, TopicRefused,
    UserDelivery, live_command, live_delivery, live_event, room_event, socket_delivery,
};
use futures::{Stream, StreamExt as _};
use tokio::sync::mpsc;
use tonic::Status;
use uuid::Uuid;

use crate::Notifications;
use crate::convert::notification_to_proto;
use crate::live::{Pending, SessionInbox, Signal};
use crate::rooms::{self, Seat};

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

    /// What the socket missed of its user's inbox, between `after` and `upto`.
    async fn resume_inbox(
        &self,
        socket: Uuid,
        user: &str,
        after: i64,
        upto: i64,
    ) -> Result<(), Ended> {
        if after >= upto {
            return Ok(());
        }
        let mut from = after;
        if upto - after > RESUME_LIMIT {
            from = upto - RESUME_LIMIT;
            self.to_socket(socket, socket_delivery::Event::Gap(format!("user:{user}")))
                .await?;
        }
        let rows = self
            .service
            .store
            .after(user, from, RESUME_LIMIT as u32)
            .await
            .unwrap_or_default();
        for row in rows.iter().filter(|row| row.seq <= upto) {
            if let Ok(notification) = notification_to_proto(row) {
                self.to_socket(socket, socket_delivery::Event::Missed(notification))
                    .await?;
            }
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

    async fn refuse_topic(
        &self,
        socket: Uuid,
        topic: String,
        reason: &str,
        message: String,
    ) -> Result<(), Ended> {
        metrics::counter!("live_topic_refusals_total", "reason" => reason.to_string()).increment(1);
        self.to_socket(
            socket,
            socket_delivery::Event::TopicRefused(TopicRefused {
                topic,
                reason: reason.to_string(),
                message,
            }),
        )
        .await
    }

    async fn join(
        &mut self,
        socket: Uuid,
        topic: String,
        after_seq: i64,
        token: String,
    ) -> Result<(), Ended> {
        let Some(state) = self.sockets.get(&socket) else {
            return Ok(());
        };
        if rooms::course_of(&topic).is_none() {
            return self
                .refuse_topic(
                    socket,
                    topic,
                    "UNKNOWN_TOPIC",
                    "topics are course:<course id>".into(),
                )
                .await;
        }
        if state.topics.contains(&topic) || state.asking.contains(&topic) {
            return Ok(());
        }
        if state.topics.len() + state.asking.len() >= MAX_TOPICS {
            let message = format!("a socket may follow at most {MAX_TOPICS} topics");
            return self
                .refuse_topic(socket, topic, "TOO_MANY_TOPICS", message)
                .await;
        }
        if let Some(state) = self.sockets.get_mut(&socket) {
            state.asking.insert(topic.clone());
        }
        self.waiting.push_back((socket, topic, after_seq, token));
        self.next_join();
        Ok(())
    }

    /// Starts waiting joins while there are places: the course service answers off the
    /// session's loop, so one slow answer holds up no other socket, and at most
    /// [`JOINS_IN_FLIGHT`] calls are out at once.
    fn next_join(&mut self) {
        while self.pending_joins < JOINS_IN_FLIGHT {
            let Some((socket, topic, after_seq, token)) = self.waiting.pop_front() else {
                return;
            };
            let Some(state) = self.sockets.get(&socket) else {
                continue;
            };
            if !state.asking.contains(&topic) {
                continue; // left before its turn
            }
            self.pending_joins += 1;
            let (service, verifier) = (self.service.clone(), self.verifier.clone());
            let user = state.user.clone();
            let course_id = rooms::course_of(&topic).unwrap_or_default().to_string();
            let answers = self.joins.clone();
            tokio::spawn(async move {
                // The token the join came with: the holder's role as of now.
                let seat = match verifier.verify(&token).await {
                    Ok(claims) if claims.sub == user => {
                        service
                            .seat(&claims, &Onward::bearer(&token), &course_id)
                            .await
                    }
                    _ => Err(Error::unauthenticated(
                        "TOKEN_INVALID",
                        "the socket's token did not verify",
                    )),
                };
                let _ = answers
                    .send(JoinAnswer {
                        socket,
                        topic,
                        after_seq,
                        seat,
                    })
                    .await;
            });
        }
    }

    async fn joined(&mut self, answer: JoinAnswer) -> Result<(), Ended> {
        let JoinAnswer {
            socket,
            topic,
            after_seq,
            seat,
        } = answer;
        let asked = self
            .sockets
            .get_mut(&socket)
            .is_some_and(|state| state.asking.remove(&topic));
        if !asked {
            return Ok(()); // the socket closed or left the topic meanwhile
        }
        let seat = match seat {
            Ok(seat) => seat,
            Err(error) => {
                let (reason, message) = rooms::refusal(&error);
                return self.refuse_topic(socket, topic, reason, message).await;
            }
        };
        let Some(state) = self.sockets.get_mut(&socket) else {
            return Ok(());
        };
        if !state.topics.insert(topic.clone()) {
            return Ok(());
        }
        let user = state.user.clone();
        if !self.rooms.contains_key(&topic) {
            self.service.live.follow(self.id, true, &topic);
            let course_id = rooms::course_of(&topic).unwrap_or_default();
            let last_seq = self
                .service
                .store
                .last_announcement(course_id)
                .await
                .unwrap_or(0);
            self.rooms.insert(
                topic.clone(),
                RoomFollow {
                    last_seq,
                    sockets: HashMap::new(),
                    dirty: true,
                    sent_version: 0,
                },
            );
        }
        let room = self.rooms.get_mut(&topic).expect("followed above");
        room.sockets.insert(socket, seat);
        room.dirty = true;
        let upto = room.last_seq;
        metrics::counter!("live_topic_joins_total").increment(1);
        self.to_socket(
            socket,
            socket_delivery::Event::Joined(TopicJoined {
                topic: topic.clone(),
                seq: upto,
                sees_who: seat == Seat::Staff,
            }),
        )
        .await?;
        self.resume_room(socket, &topic, after_seq.max(0), upto)
            .await?;
        if seat == Seat::Learner {
            self.service
                .live
                .membership(&topic, &user, socket, true)
                .await;
        }
        Ok(())
    }

    /// What the socket missed of a room's announcements, between `after` and `upto`.
    async fn resume_room(
        &self,
        socket: Uuid,
        topic: &str,
        after: i64,
        upto: i64,
    ) -> Result<(), Ended> {
        if after == 0 || after >= upto {
            return Ok(());
        }
        let mut from = after;
        if upto - after > RESUME_LIMIT {
            from = upto - RESUME_LIMIT;
            self.to_socket(socket, socket_delivery::Event::Gap(topic.to_string()))
                .await?;
        }
        let course_id = rooms::course_of(topic).unwrap_or_default();
        let rows = self
            .service
            .store
            .announcements_after(course_id, from, RESUME_LIMIT as u32)
            .await
            .unwrap_or_default();
        for row in rows.iter().filter(|row| row.seq <= upto) {
            let event = rooms::announcement_event(topic.to_string(), row);
            self.to_socket(socket, socket_delivery::Event::RoomEvent(event))
                .await?;
        }
        Ok(())
    }

    async fn leave(&mut self, socket: Uuid, topic: &str) {
        let Some(state) = self.sockets.get_mut(&socket) else {
            return;
        };
        state.asking.remove(topic);
        if state.topics.remove(topic) {
            let user = state.user.clone();
            self.leave_room(socket, topic, &user).await;
        }
    }

    /// Takes the socket out of the room's follow (and the room's presence).
    async fn leave_room(&mut self, socket: Uuid, topic: &str, user: &str) {
        let Some(room) = self.rooms.get_mut(topic) else {
            return;
        };
        let seat = room.sockets.remove(&socket);
        if room.sockets.is_empty() {
            self.rooms.remove(topic);
            self.service.live.unfollow(self.id, true, topic);
        }
        if seat == Some(Seat::Learner) {
            self.service
                .live
                .membership(topic, user, socket, false)
                .await;
        }
    }

    /// Everything the hub told since the last time, coalesced.
    async fn signals(&mut self, pending: Pending) -> Result<(), Ended> {
        if pending.resync {
            // Rereads every user and room this session follows.
            self.signal(Signal::Resync).await?;
        } else {
            for user in pending.wakes {
                self.reread_inbox(&user).await?;
            }
            for topic in pending.news {
                self.reread_room(&topic).await?;
            }
        }
        for signal in pending.momentary {
            self.signal(signal).await?;
        }
        Ok(())
    }

    async fn signal(&mut self, signal: Signal) -> Result<(), Ended> {
        match signal {
            Signal::Wake(user) => self.reread_inbox(&user).await,
            Signal::Progress(user, progress) => {
                let Some(follow) = self.users.get(&user) else {
                    return Ok(());
                };
                let context = FlagContext {
                    user_id: Some(&user),
                    tier: Some(&follow.tier),
                    role: Some(&follow.role),
                    course_id: Some(&progress.course_id),
                };
                if !passes(&self.service.flags, &context) {
                    return Ok(());
                }
                let event = LiveEvent {
                    event: Some(live_event::Event::Progress(progress)),
                };
                self.send(live_delivery::Delivery::User(UserDelivery {
                    user_id: user,
                    event: Some(event),
                }))
                .await
            }
            Signal::Evict(user, socket) => {
                let Ok(socket) = Uuid::parse_str(&socket) else {
                    return Ok(());
                };
                let ours = self
                    .sockets
                    .get(&socket)
                    .is_some_and(|state| state.user == user);
                if !ours {
                    return Ok(());
                }
                metrics::counter!("live_evictions_total").increment(1);
                self.to_socket(socket, socket_delivery::Event::Evicted(true))
                    .await
            }
            Signal::RoomNews(topic) => self.reread_room(&topic).await,
            // Followed through versions, on the presence tick.
            Signal::PresenceChanged(_) => Ok(()),
            Signal::Removed(topic, user) => {
                let sockets: Vec<Uuid> = self
                    .rooms
                    .get(&topic)
                    .map(|room| room.sockets.keys().copied().collect())
                    .unwrap_or_default();
                for socket in sockets {
                    let theirs = self
                        .sockets
                        .get(&socket)
                        .is_some_and(|state| state.user == user);
                    if theirs {
                        self.leave(socket, &topic).await;
                        self.refuse_topic(
                            socket,
                            topic.clone(),
                            "NOT_ENROLLED",
                            "your enrollment in this course ended".into(),
                        )
                        .await?;
                    }
                }
                Ok(())
            }
            Signal::Resync => {
                let users: Vec<String> = self.users.keys().cloned().collect();
                for user in users {
                    self.reread_inbox(&user).await?;
                }
                let topics: Vec<String> = self.rooms.keys().cloned().collect();
                for topic in topics {
                    self.reread_room(&topic).await?;
                    if let Some(room) = self.rooms.get_mut(&topic) {
                        room.dirty = true;
                    }
                }
                Ok(())
            }
        }
    }

    /// Sends the user's notifications after the last one sent, once for all their
    /// sockets on this session.
    async fn reread_inbox(&mut self, user: &str) -> Result<(), Ended> {
        loop {
            let Some(follow) = self.users.get(user) else {
                return Ok(());
            };
            let rows = match self.service.store.after(user, follow.last_seq, 100).await {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::warn!(%error, "could not read an inbox for a live session");
                    return Ok(());
                }
            };
            for row in &rows {
                let Ok(notification) = notification_to_proto(row) else {
                    continue;
                };
                self.send(live_delivery::Delivery::User(UserDelivery {
                    user_id: user.to_string(),
                    event: Some(LiveEvent {
                        event: Some(live_event::Event::Notification(notification)),
                    }),
                }))
                .await?;
            }
            if let (Some(follow), Some(last)) = (self.users.get_mut(user), rows.last()) {
                follow.last_seq = follow.last_seq.max(last.seq);
            }
            if rows.len() < 100 {
                return Ok(());
            }
        }
    }

    /// Sends the room's announcements after the last one sent.
    async fn reread_room(&mut self, topic: &str) -> Result<(), Ended> {
        let Some(room) = self.rooms.get(topic) else {
            return Ok(());
        };
        let course_id = rooms::course_of(topic).unwrap_or_default();
        let rows = match self
            .service
            .store
            .announcements_after(course_id, room.last_seq, RESUME_LIMIT as u32)
            .await
        {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "could not read a room's announcements");
                return Ok(());
            }
        };
        for row in &rows {
            self.send(live_delivery::Delivery::Room(rooms::announcement_event(
                topic.to_string(),
                row,
            )))
            .await?;
        }
        if let (Some(room), Some(last)) = (self.rooms.get_mut(topic), rows.last()) {
            room.last_seq = room.last_seq.max(last.seq);
        }
        Ok(())
    }

    /// Sends each changed room's presence (at most once per [`PRESENCE_EVERY`]).
    async fn presence(&mut self) -> Result<(), Ended> {
        let live = &self.service.live;
        let dirty: Vec<String> = self
            .rooms
            .iter_mut()
            .filter_map(|(topic, room)| {
                let version = live.presence_version(topic);
                let changed = std::mem::take(&mut room.dirty) || version != room.sent_version;
                room.sent_version = version;
                changed.then(|| topic.clone())
            })
            .collect();
        for topic in dirty {
            let Some(presence) = self.service.live.presence(&topic).await else {
                continue;
            };
            let course_id = rooms::course_of(&topic).unwrap_or_default().to_string();
            // With the names: the gateway leaves them out for learners' sockets.
            let presence = rooms::presence_to_proto(course_id, presence.learners, true);
            self.send(live_delivery::Delivery::Room(RoomEvent {
                topic,
                event: Some(room_event::Event::Presence(presence)),
            }))
            .await?;
        }
        Ok(())
    }
}

fn passes(flags: &Flags, context: &FlagContext<'_>) -> bool {
    flags.enabled(LIVE_PROGRESS, context)
}
