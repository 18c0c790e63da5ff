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
use duovarsity_common::auth::{Claims, TokenVerifier};
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

use crate::Notifications;
use crate::convert::notification_to_proto;
use crate::live::{Registration, Signal};
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

struct SocketState {
    claims: Claims,
    token: String,
    topics: HashSet<String>,
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
    sockets: HashMap<String, Seat>,
    dirty: bool,
}

/// A join the course service has answered.
struct JoinAnswer {
    socket: String,
    topic: String,
    after_seq: i64,
    seat: Result<Seat, Error>,
}

struct Session {
    service: Notifications,
    verifier: Arc<TokenVerifier>,
    /// This session's id in the hub, and its overflow token.
    id: u64,
    overflow: tokio_util::sync::CancellationToken,
    out: mpsc::Sender<Result<LiveDelivery, Status>>,
    sockets: HashMap<String, SocketState>,
    users: HashMap<String, UserFollow>,
    rooms: HashMap<String, RoomFollow>,
    joins: mpsc::Sender<JoinAnswer>,
    pending_joins: usize,
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
        let Registration {
            id,
            signals,
            overflow,
        } = self.live.register();
        let session = Session {
            service: self.clone(),
            verifier,
            id,
            overflow,
            out,
            sockets: HashMap::new(),
            users: HashMap::new(),
            rooms: HashMap::new(),
            joins,
            pending_joins: 0,
        };
        tokio::spawn(session.run(commands, answers, signals));
        tokio_stream::wrappers::ReceiverStream::new(deliveries)
    }
}

impl Session {
    async fn run(
        mut self,
        mut commands: impl Stream<Item = Result<LiveCommand, Status>> + Unpin,
        mut answers: mpsc::Receiver<JoinAnswer>,
        mut signals: mpsc::Receiver<Signal>,
    ) {
        metrics::gauge!("live_sessions").increment(1.0);
        let mut presence = tokio::time::interval(PRESENCE_EVERY);
        let mut safety = tokio::time::interval(SAFETY_POLL);
        safety.tick().await;
        let overflow = self.overflow.clone();
        loop {
            let step = tokio::select! {
                () = overflow.cancelled() => {
                    tracing::warn!("a live session fell behind its signals; ending it so its gateway resumes");
                    let _ = self.out.try_send(Err(Status::unavailable("the live session fell behind; reopen it and resume")));
                    break;
                }
                command = commands.next() => match command {
                    Some(Ok(command)) => self.command(command).await,
                    _ => break,
                },
                Some(answer) = answers.recv() => {
                    self.pending_joins -= 1;
                    self.joined(answer).await
                }
                Some(signal) = signals.recv() => self.signal(signal).await,
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

    async fn to_socket(&self, socket: &str, event: socket_delivery::Event) -> Result<(), Ended> {
        self.send(live_delivery::Delivery::Socket(SocketDelivery {
            socket_id: socket.to_string(),
            event: Some(event),
        }))
        .await
    }

    async fn command(&mut self, command: LiveCommand) -> Result<(), Ended> {
        match command.command {
            Some(live_command::Command::Open(open)) => {
                self.open(open.socket_id, open.access_token, open.after_seq)
                    .await
            }
            Some(live_command::Command::Close(close)) => {
                self.close(&close.socket_id).await;
                Ok(())
            }
            Some(live_command::Command::Renew(renew)) => {
                self.renew(&renew.socket_id, renew.access_token).await
            }
            Some(live_command::Command::Join(join)) => {
                self.join(join.socket_id, join.topic, join.after_seq).await
            }
            Some(live_command::Command::Leave(leave)) => {
                self.leave(&leave.socket_id, &leave.topic).await;
                Ok(())
            }
            None => Ok(()),
        }
    }

    async fn open(&mut self, socket: String, token: String, after_seq: i64) -> Result<(), Ended> {
        if uuid::Uuid::parse_str(&socket).is_err() || self.sockets.contains_key(&socket) {
            return self
                .to_socket(
                    &socket,
                    socket_delivery::Event::Refused("a socket id must be a new UUID".into()),
                )
                .await;
        }
        if self.sockets.len() >= MAX_SOCKETS {
            return self
                .to_socket(
                    &socket,
                    socket_delivery::Event::Refused(
                        "this gateway session holds too many sockets".into(),
                    ),
                )
                .await;
        }
        let claims = match self.verifier.verify(&token).await {
            Ok(claims) => claims,
            Err(error) => {
                return self
                    .to_socket(&socket, socket_delivery::Event::Refused(error.to_string()))
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
            socket.clone(),
            SocketState {
                claims,
                token,
                topics: HashSet::new(),
            },
        );
        metrics::gauge!("live_sockets").increment(1.0);
        self.resume_inbox(&socket, &user, after_seq.max(0), upto)
            .await?;
        for evicted in self.service.live.open_socket(&user, &socket).await {
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
        socket: &str,
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

    async fn close(&mut self, socket: &str) {
        let Some(state) = self.sockets.remove(socket) else {
            return;
        };
        metrics::gauge!("live_sockets").decrement(1.0);
        for topic in &state.topics {
            self.leave_room(socket, topic, &state.claims.sub).await;
        }
        let user = state.claims.sub;
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
        let sockets: Vec<String> = self.sockets.keys().cloned().collect();
        for socket in sockets {
            self.close(&socket).await;
        }
        self.service.live.unregister(self.id);
    }

    async fn renew(&mut self, socket: &str, token: String) -> Result<(), Ended> {
        let Some(state) = self.sockets.get_mut(socket) else {
            return Ok(());
        };
        match self.verifier.verify(&token).await {
            Ok(claims) if claims.sub == state.claims.sub => {
                if let Some(follow) = self.users.get_mut(&claims.sub) {
                    follow.role.clone_from(&claims.role);
                    follow.tier.clone_from(&claims.tier);
                }
                state.claims = claims;
                state.token = token;
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
        socket: &str,
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

    async fn join(&mut self, socket: String, topic: String, after_seq: i64) -> Result<(), Ended> {
        let Some(state) = self.sockets.get(&socket) else {
            return Ok(());
        };
        let Some(course_id) = rooms::course_of(&topic) else {
            return self
                .refuse_topic(
                    &socket,
                    topic,
                    "UNKNOWN_TOPIC",
                    "topics are course:<course id>".into(),
                )
                .await;
        };
        if state.topics.contains(&topic) {
            return Ok(());
        }
        if state.topics.len() >= MAX_TOPICS {
            let message = format!("a socket may follow at most {MAX_TOPICS} topics");
            return self
                .refuse_topic(&socket, topic, "TOO_MANY_TOPICS", message)
                .await;
        }
        if self.pending_joins >= JOINS_IN_FLIGHT {
            return self
                .refuse_topic(
                    &socket,
                    topic,
                    "UNAVAILABLE",
                    "too many subscriptions at once; retry shortly".into(),
                )
                .await;
        }
        // The course service answers off the session's loop, so one slow answer holds
        // up no other socket.
        self.pending_joins += 1;
        let service = self.service.clone();
        let claims = state.claims.clone();
        let caller = Onward::bearer(&state.token);
        let course_id = course_id.to_string();
        let answers = self.joins.clone();
        tokio::spawn(async move {
            let seat = service.seat(&claims, &caller, &course_id).await;
            let _ = answers
                .send(JoinAnswer {
                    socket,
                    topic,
                    after_seq,
                    seat,
                })
                .await;
        });
        Ok(())
    }

    async fn joined(&mut self, answer: JoinAnswer) -> Result<(), Ended> {
        let JoinAnswer {
            socket,
            topic,
            after_seq,
            seat,
        } = answer;
        let seat = match seat {
            Ok(seat) => seat,
            Err(error) => {
                let (reason, message) = rooms::refusal(&error);
                return self.refuse_topic(&socket, topic, reason, message).await;
            }
        };
        let Some(state) = self.sockets.get_mut(&socket) else {
            return Ok(());
        };
        if !state.topics.insert(topic.clone()) {
            return Ok(());
        }
        let user = state.claims.sub.clone();
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
                },
            );
        }
        let room = self.rooms.get_mut(&topic).expect("followed above");
        room.sockets.insert(socket.clone(), seat);
        room.dirty = true;
        let upto = room.last_seq;
        metrics::counter!("live_topic_joins_total").increment(1);
        self.to_socket(
            &socket,
            socket_delivery::Event::Joined(TopicJoined {
                topic: topic.clone(),
                seq: upto,
                sees_who: seat == Seat::Staff,
            }),
        )
        .await?;
        self.resume_room(&socket, &topic, after_seq.max(0), upto)
            .await?;
        if seat == Seat::Learner {
            self.service
                .live
                .membership(&topic, &user, &socket, true)
                .await;
        }
        Ok(())
    }

    /// What the socket missed of a room's announcements, between `after` and `upto`.
    async fn resume_room(
        &self,
        socket: &str,
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

    async fn leave(&mut self, socket: &str, topic: &str) {
        let Some(state) = self.sockets.get_mut(socket) else {
            return;
        };
        if state.topics.remove(topic) {
            let user = state.claims.sub.clone();
            self.leave_room(socket, topic, &user).await;
        }
    }

    /// Takes the socket out of the room's follow (and the room's presence).
    async fn leave_room(&mut self, socket: &str, topic: &str, user: &str) {
        let Some(room) = self.rooms.get_mut(topic) else {
            return;
        };
        let seat = room.sockets.remove(socket);
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
                let ours = self
                    .sockets
                    .get(&socket)
                    .is_some_and(|state| state.claims.sub == user);
                if !ours {
                    return Ok(());
                }
                metrics::counter!("live_evictions_total").increment(1);
                self.to_socket(&socket, socket_delivery::Event::Evicted(true))
                    .await
            }
            Signal::RoomNews(topic) => self.reread_room(&topic).await,
            Signal::PresenceChanged(topic) => {
                if let Some(room) = self.rooms.get_mut(&topic) {
                    room.dirty = true;
                }
                Ok(())
            }
            Signal::Removed(topic, user) => {
                let sockets: Vec<String> = self
                    .rooms
                    .get(&topic)
                    .map(|room| room.sockets.keys().cloned().collect())
                    .unwrap_or_default();
                for socket in sockets {
                    let theirs = self
                        .sockets
                        .get(&socket)
                        .is_some_and(|state| state.claims.sub == user);
                    if theirs {
                        self.leave(&socket, &topic).await;
                        self.refuse_topic(
                            &socket,
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
        let dirty: Vec<String> = self
            .rooms
            .iter_mut()
            .filter_map(|(topic, room)| std::mem::take(&mut room.dirty).then(|| topic.clone()))
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
