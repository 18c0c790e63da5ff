//! The gateway's side of live delivery: one `Live` session to the notification service
//! for all of this gateway's sockets, following each user and each room once, and an
//! in-memory fan-out to the sockets. A message is rendered to JSON once and the same
//! bytes go into every socket's mailbox.
//!
//! Each socket has a bounded mailbox ([`super::mailbox`]); a socket whose client reads
//! too slowly to keep it from filling is closed with [`super::CLOSE_LAGGING`] and
//! resumes when it reconnects. A lost session is reopened
//! with backoff, and every socket and subscription is replayed with the last sequence
//! numbers delivered, so nothing is lost or repeated across the reconnection.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use duovarsity_proto::notification::notification_service_client::NotificationServiceClient;
use duovarsity_proto::notification::{
    CloseSocket, JoinTopic, LeaveTopic, LiveCommand, LiveDelivery, OpenSocket, RenewSocket,
    RoomEvent, live_command, live_delivery, live_event, room_event, socket_delivery,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::frames;
use super::mailbox::Mailbox;

/// Topics one socket may follow.
pub const MAX_TOPICS: usize = 16;
/// The longest topic name (`course:` and a UUID are 43 bytes).
const MAX_TOPIC_LEN: usize = 64;
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct SocketEntry {
    user: String,
    token: String,
    mailbox: Arc<Mailbox>,
    /// The last notification sequence delivered.
    last_seq: i64,
    /// Topics asked for (joined or waiting for the answer), with the sequence to resume
    /// after.
    topics: HashMap<String, i64>,
}

struct Member {
    mailbox: Arc<Mailbox>,
    sees_who: bool,
}

#[derive(Default)]
struct TopicEntry {
    /// The last announcement delivered to the topic's sockets.
    last_seq: i64,
    sockets: HashMap<Arc<str>, Member>,
}

#[derive(Default)]
struct State {
    /// The session's command queue; None while it is being (re)opened. Unbounded but
    /// bounded by what the sockets may ask: each socket sends at most an open, a close,
    /// its renewals and [`MAX_TOPICS`] joins between answers, at a pace the socket's
    /// subscription budget limits.
    commands: Option<mpsc::UnboundedSender<LiveCommand>>,
    sockets: HashMap<Arc<str>, SocketEntry>,
    users: HashMap<String, HashSet<Arc<str>>>,
    topics: HashMap<String, TopicEntry>,
}

impl State {
    fn send(&self, command: live_command::Command) {
        if let Some(commands) = &self.commands {
            // A closed queue means the session is being reopened: the replay carries it.
            let _ = commands.send(LiveCommand {
                command: Some(command),
            });
        }
    }

    fn push(mailbox: &Mailbox, frame: Utf8Bytes) {
        if !mailbox.push(frame) {
            metrics::counter!("websocket_lagging_disconnects_total").increment(1);
        }
    }

    fn to_socket(&self, socket: &str, frame: Utf8Bytes) {
        if let Some(entry) = self.sockets.get(socket) {
            Self::push(&entry.mailbox, frame);
        }
    }

    /// Takes a socket out of a topic's members; true when it was one.
    fn leave_topic(&mut self, socket: &str, topic: &str) -> bool {
        let Some(entry) = self.topics.get_mut(topic) else {
            return false;
        };
        let was = entry.sockets.remove(socket).is_some();
        if entry.sockets.is_empty() {
            self.topics.remove(topic);
        }
        was
    }
}

/// One gateway's live session and its sockets.
pub struct Fanout {
    channel: Channel,
    state: Mutex<State>,
    started: std::sync::Once,
    shutdown: CancellationToken,
}

/// Why a subscription was refused at the gateway.
pub struct Refused {
    pub reason: &'static str,
    pub message: String,
}

impl Fanout {
    pub fn new(channel: Channel, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            channel,
            state: Mutex::default(),
            started: std::sync::Once::new(),
            shutdown,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fanout lock")
    }

    /// Registers a socket of `user` (resuming notifications after `after_seq`); the
    /// session opens with the first socket.
    pub fn open(
        self: &Arc<Self>,
        user: &str,
        token: &str,
        after_seq: i64,
    ) -> (Arc<str>, Arc<Mailbox>) {
        self.started.call_once(|| {
            tokio::spawn(self.clone().run());
        });
        let id: Arc<str> = uuid::Uuid::now_v7().to_string().into();
        let mailbox = Arc::new(Mailbox::default());
        let mut state = self.state();
        state.sockets.insert(
            id.clone(),
            SocketEntry {
                user: user.to_string(),
                token: token.to_string(),
                mailbox: mailbox.clone(),
                last_seq: after_seq,
                topics: HashMap::new(),
            },
        );
        state
            .users
            .entry(user.to_string())
            .or_default()
            .insert(id.clone());
        state.send(live_command::Command::Open(OpenSocket {
            socket_id: id.to_string(),
            access_token: token.to_string(),
            after_seq,
        }));
        (id, mailbox)
    }

    /// Forgets a socket that closed.
    pub fn close(&self, socket: &str) {
        let mut state = self.state();
        let Some(entry) = state.sockets.remove(socket) else {
            return;
        };
        for topic in entry.topics.keys() {
            state.leave_topic(socket, topic);
        }
        if let Some(sockets) = state.users.get_mut(&entry.user) {
            sockets.remove(socket);
            if sockets.is_empty() {
                state.users.remove(&entry.user);
            }
        }
        state.send(live_command::Command::Close(CloseSocket {
            socket_id: socket.to_string(),
        }));
    }

    /// A fresh token for the socket (the same user's, checked by the caller).
    pub fn renew(&self, socket: &str, token: &str) {
        let mut state = self.state();
        if let Some(entry) = state.sockets.get_mut(socket) {
            entry.token = token.to_string();
        }
        state.send(live_command::Command::Renew(RenewSocket {
            socket_id: socket.to_string(),
            access_token: token.to_string(),
        }));
    }

    /// Asks to follow a topic; the answer (`subscribed` or an error) comes as a frame.
    pub fn subscribe(&self, socket: &str, topic: &str, after: i64) -> Result<(), Refused> {
        // Topics are `course:<uuid>`: a longer name is no topic, and is not kept.
        if topic.len() > MAX_TOPIC_LEN {
            return Err(Refused {
                reason: "UNKNOWN_TOPIC",
                message: "topics are course:<course id>".into(),
            });
        }
        let mut state = self.state();
        let Some(entry) = state.sockets.get_mut(socket) else {
            return Ok(());
        };
        if entry.topics.contains_key(topic) {
            // Asked again: answered again once joined.
            let seq = state
                .topics
                .get(topic)
                .and_then(|t| t.sockets.contains_key(socket).then_some(t.last_seq));
            if let Some(seq) = seq {
                state.to_socket(socket, frames::subscribed(topic, seq));
            }
            return Ok(());
        }
        if entry.topics.len() >= MAX_TOPICS {
            return Err(Refused {
                reason: "TOO_MANY_TOPICS",
                message: format!("a socket may follow at most {MAX_TOPICS} topics"),
            });
        }
        entry.topics.insert(topic.to_string(), after.max(0));
        let access_token = entry.token.clone();
        state.send(live_command::Command::Join(JoinTopic {
            socket_id: socket.to_string(),
            topic: topic.to_string(),
            after_seq: after.max(0),
            access_token,
        }));
        Ok(())
    }

    pub fn unsubscribe(&self, socket: &str, topic: &str) {
        let mut state = self.state();
        let Some(entry) = state.sockets.get_mut(socket) else {
            return;
        };
        if entry.topics.remove(topic).is_none() {
            state.to_socket(socket, frames::unsubscribed(topic, None));
            return;
        }
        state.leave_topic(socket, topic);
        state.send(live_command::Command::Leave(LeaveTopic {
            socket_id: socket.to_string(),
            topic: topic.to_string(),
        }));
        state.to_socket(socket, frames::unsubscribed(topic, None));
    }

    /// Keeps the session open (reopening it with backoff) until shutdown.
    async fn run(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        while !self.shutdown.is_cancelled() {
            let (commands, queue) = mpsc::unbounded_channel();
            self.replay(commands);
            let mut client = NotificationServiceClient::new(self.channel.clone());
            let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(queue);
            match client.live(stream).await {
                Ok(response) => {
                    let mut deliveries = response.into_inner();
                    loop {
                        tokio::select! {
                            () = self.shutdown.cancelled() => return,
                            delivery = deliveries.message() => match delivery {
                                Ok(Some(delivery)) => {
                                    backoff = Duration::from_millis(100);
                                    self.deliver(delivery);
                                }
                                Ok(None) => break,
                                Err(status) => {
                                    tracing::warn!(%status, "the live session ended; reopening it");
                                    break;
                                }
                            },
                        }
                    }
                }
                Err(status) => tracing::warn!(%status, "could not open the live session"),
            }
            self.state().commands = None;
            metrics::counter!("live_session_reopens_total").increment(1);
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Opens every socket and asks for every topic again on a new session, resuming
    /// after what was delivered.
    fn replay(&self, commands: mpsc::UnboundedSender<LiveCommand>) {
        let mut state = self.state();
        state.commands = Some(commands);
        for (id, entry) in &state.sockets {
            state.send(live_command::Command::Open(OpenSocket {
                socket_id: id.to_string(),
                access_token: entry.token.clone(),
                after_seq: entry.last_seq,
            }));
            for (topic, after) in &entry.topics {
                let after = state.topics.get(topic).map_or(*after, |t| t.last_seq);
                state.send(live_command::Command::Join(JoinTopic {
                    socket_id: id.to_string(),
                    topic: topic.clone(),
                    after_seq: after,
                    access_token: entry.token.clone(),
                }));
            }
        }
    }

    fn deliver(&self, delivery: LiveDelivery) {
        match delivery.delivery {
            Some(live_delivery::Delivery::User(user)) => {
                let Some(event) = user.event else { return };
                let seq = match &event.event {
                    Some(live_event::Event::Notification(n)) => Some(n.seq),
                    _ => None,
                };
                let frame = frames::render(frames::LIVE_EVENT, &event);
                let mut state = self.state();
                let sockets: Vec<Arc<str>> = state
                    .users
                    .get(&user.user_id)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default();
                for socket in sockets {
                    if let Some(entry) = state.sockets.get_mut(&socket) {
                        if let Some(seq) = seq {
                            if seq <= entry.last_seq {
                                continue;
                            }
                            entry.last_seq = seq;
                        }
                        State::push(&entry.mailbox, frame.clone());
                    }
                }
            }
            Some(live_delivery::Delivery::Socket(socket)) => self.to_socket(socket),
            Some(live_delivery::Delivery::Room(event)) => self.to_room(event),
            None => {}
        }
    }

    fn to_socket(&self, delivery: duovarsity_proto::notification::SocketDelivery) {
        let socket = delivery.socket_id.as_str();
        let mut state = self.state();
        let Some(entry) = state.sockets.get_mut(socket) else {
            return;
        };
        match delivery.event {
            Some(socket_delivery::Event::Refused(reason)) => {
                tracing::info!(%reason, "the notification service refused a socket");
                entry.mailbox.close(super::CLOSE_UNAUTHENTICATED);
            }
            Some(socket_delivery::Event::Missed(notification))
                if notification.seq > entry.last_seq =>
            {
                entry.last_seq = notification.seq;
                State::push(&entry.mailbox, frames::notification(&notification));
            }
            Some(socket_delivery::Event::Joined(joined)) => {
                if !entry.topics.contains_key(&joined.topic) {
                    // Unsubscribed while the answer was on its way.
                    return;
                }
                let mailbox = entry.mailbox.clone();
                let topic = state.topics.entry(joined.topic.clone()).or_default();
                if topic.sockets.is_empty() {
                    topic.last_seq = joined.seq;
                }
                let seq = topic.last_seq;
                let member = Member {
                    mailbox: mailbox.clone(),
                    sees_who: joined.sees_who,
                };
                // A replayed join (the session was reopened) is not news to the client.
                if topic.sockets.insert(socket.into(), member).is_none() {
                    State::push(&mailbox, frames::subscribed(&joined.topic, seq));
                }
            }
            Some(socket_delivery::Event::TopicRefused(refused)) => {
                let asked = entry.topics.remove(&refused.topic).is_some();
                let mailbox = entry.mailbox.clone();
                let frame = if state.leave_topic(socket, &refused.topic) {
                    frames::unsubscribed(&refused.topic, Some(&refused.reason))
                } else {
                    frames::error(Some(&refused.topic), &refused.reason, &refused.message)
                };
                if asked {
                    State::push(&mailbox, frame);
                }
            }
            Some(socket_delivery::Event::RoomEvent(event)) => {
                // What this socket missed of a room (a resume).
                State::push(&entry.mailbox, frames::render(frames::ROOM_EVENT, &event));
            }
            Some(socket_delivery::Event::Gap(topic)) => {
                State::push(&entry.mailbox, frames::gap(&topic));
            }
            Some(socket_delivery::Event::Evicted(_)) => {
                entry.mailbox.close(super::CLOSE_REPLACED);
            }
            // A notification the socket had already.
            Some(socket_delivery::Event::Missed(_)) | None => {}
        }
    }

    /// One room event to every socket of the room: rendered once (twice for presence:
    /// with the learners' ids for the instructor and admins, without for learners).
    fn to_room(&self, event: RoomEvent) {
        let mut state = self.state();
        let Some(topic) = state.topics.get_mut(&event.topic) else {
            return;
        };
        match &event.event {
            Some(room_event::Event::Announcement(announcement)) => {
                if announcement.seq <= topic.last_seq {
                    return;
                }
                topic.last_seq = announcement.seq;
                let frame = frames::render(frames::ROOM_EVENT, &event);
                for member in topic.sockets.values() {
                    State::push(&member.mailbox, frame.clone());
                }
            }
            Some(room_event::Event::Presence(presence)) => {
                let with_names = frames::render(frames::ROOM_EVENT, &event);
                let mut anonymous = presence.clone();
                anonymous.learner_ids.clear();
                let without_names = frames::render(
                    frames::ROOM_EVENT,
                    &RoomEvent {
                        topic: event.topic.clone(),
                        event: Some(room_event::Event::Presence(anonymous)),
                    },
                );
                for member in topic.sockets.values() {
                    let frame = if member.sees_who {
                        with_names.clone()
                    } else {
                        without_names.clone()
                    };
                    State::push(&member.mailbox, frame);
                }
            }
            None => {}
        }
        metrics::counter!("live_room_events_total").increment(1);
    }
}
