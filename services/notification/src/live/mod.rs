//! The live hub of one replica: which gateway sessions follow which users and rooms, who
//! has sockets open (the per-user cap), who is in each room (presence), and the signals
//! that tell sessions something changed.
//!
//! A signal carries no inbox data: a wake-up makes a session reread a user's inbox (or a
//! room's announcements) after the last sequence number it sent, so a lost or duplicated
//! signal never loses or repeats a notification. Progress changes, evictions and removals
//! are momentary and carried as they are.
//!
//! - One process: signals go straight to the sessions that follow the user or room (so an
//!   event costs as much as the sessions that need it, not every socket's).
//! - Several replicas (`redis_url` set): a signal is also published on one Redis channel
//!   and every replica passes it to its own sessions. After the subscription was lost,
//!   every session rereads everything it follows. Open sockets (per user) and room
//!   members (per course) are Redis sorted sets of leases that each replica renews every
//!   [`LEASE_RENEWAL`] for what it holds, so what a dead replica held stops counting
//!   within [`PRESENCE_TTL`].

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duovarsity_common::pubsub::{REDIS_DEADLINE, RedisLink};
use duovarsity_proto::notification::LessonProgress;
use redis::AsyncCommands as _;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod presence;
mod wire;

pub use presence::RoomPresence;
use presence::renew_leases;
use wire::{decode, encode};

const CHANNEL: &str = "duovarsity:live";
/// What a dead replica held outlives it by at most this long.
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);
const LEASE_RENEWAL: Duration = Duration::from_secs(10);
/// Momentary signals (progress, evictions, removals) a session may have waiting; past it
/// the session is ended (its gateway opens a new one and resumes), never grown without
/// bound.
pub const SIGNALS_PER_SESSION: usize = 4096;

/// What a session is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// Look in the user's inbox for news.
    Wake(String),
    /// The user's progress in a lesson changed.
    Progress(String, LessonProgress),
    /// Close this socket of the user: they opened more than allowed and it is the oldest.
    Evict(String, String),
    /// Look in the room's announcements for news.
    RoomNews(String),
    /// Who is in the room changed.
    PresenceChanged(String),
    /// The user may no longer be in the room (their enrollment ended).
    Removed(String, String),
    /// Signals may have been lost: reread everything.
    Resync,
}

impl Signal {
    /// Whom it concerns: a user (`false`) or a room (`true`), by key; `None` for all.
    fn audience(&self) -> Option<(bool, &str)> {
        match self {
            Self::Wake(user) | Self::Progress(user, _) | Self::Evict(user, _) => {
                Some((false, user))
            }
            Self::RoomNews(topic) | Self::PresenceChanged(topic) | Self::Removed(topic, _) => {
                Some((true, topic))
            }
            Self::Resync => None,
        }
    }
}

/// What a session has been told and not yet handled. Wake-ups, room news and resyncs
/// coalesce (a burst of them for one user or room is one reread); momentary signals
/// queue, at most [`SIGNALS_PER_SESSION`] of them.
#[derive(Debug, Default)]
pub struct Pending {
    pub wakes: HashSet<String>,
    pub news: HashSet<String>,
    pub momentary: VecDeque<Signal>,
    pub resync: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.wakes.is_empty() && self.news.is_empty() && self.momentary.is_empty() && !self.resync
    }
}

/// A session's end of the hub.
pub struct SessionInbox {
    pub id: u64,
    pending: Mutex<Pending>,
    ready: Notify,
    /// Cancelled when the session fell behind by [`SIGNALS_PER_SESSION`] momentary signals.
    pub overflow: CancellationToken,
}

impl SessionInbox {
    fn tell(&self, signal: Signal) {
        {
            let mut pending = self.pending.lock().expect("session inbox lock");
            match signal {
                Signal::Wake(user) => {
                    pending.wakes.insert(user);
                }
                Signal::RoomNews(topic) => {
                    pending.news.insert(topic);
                }
                Signal::Resync => pending.resync = true,
                // Presence is followed through versions (see `LiveHub::presence_version`).
                Signal::PresenceChanged(_) => return,
                momentary => {
                    if pending.momentary.len() >= SIGNALS_PER_SESSION {
                        self.overflow.cancel();
                        return;
                    }
                    pending.momentary.push_back(momentary);
                }
            }
        }
        self.ready.notify_one();
    }

    /// Waits for signals and takes them all.
    pub async fn next(&self) -> Pending {
        loop {
            {
                let mut pending = self.pending.lock().expect("session inbox lock");
                if !pending.is_empty() {
                    return std::mem::take(&mut *pending);
                }
            }
            self.ready.notified().await;
        }
    }
}

#[derive(Default)]
struct State {
    next_session: u64,
    /// Bumped (from one counter) whenever a room's members change: sessions compare.
    next_version: u64,
    presence: HashMap<String, u64>,
    sessions: HashMap<u64, Arc<SessionInbox>>,
    users: HashMap<String, HashSet<u64>>,
    rooms: HashMap<String, HashSet<u64>>,
    /// Open sockets of this replica, per user (ids are UUIDv7: oldest first).
    sockets: HashMap<String, BTreeSet<Uuid>>,
    /// Learners' sockets in each room on this replica: topic, user, sockets.
    members: HashMap<String, HashMap<String, BTreeSet<Uuid>>>,
}

impl State {
    fn tell(&mut self, signal: &Signal) {
        if let Signal::PresenceChanged(topic) = signal {
            if self.rooms.contains_key(topic) {
                self.next_version += 1;
                self.presence.insert(topic.clone(), self.next_version);
            }
            return;
        }
        let followers = match signal.audience() {
            Some((false, user)) => self.users.get(user),
            Some((true, topic)) => self.rooms.get(topic),
            None => {
                for session in self.sessions.values() {
                    session.tell(Signal::Resync);
                }
                return;
            }
        };
        for id in followers.into_iter().flatten() {
            if let Some(session) = self.sessions.get(id) {
                session.tell(signal.clone());
            }
        }
    }
}

#[derive(Clone)]
pub struct LiveHub {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<Mutex<State>>,
    /// Sockets one user may have open (on every gateway); past it the oldest is closed.
    per_user: u32,
    redis: Option<Shared>,
}

struct Shared {
    /// Tells this replica's own messages apart when they come back from the channel.
    origin: [u8; 16],
    link: RedisLink,
    follower: tokio::task::JoinHandle<()>,
    renewer: tokio::task::JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.follower.abort();
        self.renewer.abort();
    }
}

impl LiveHub {
    /// This process only; at most `per_user` sockets per user.
    pub fn local(per_user: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Arc::default(),
                per_user,
                redis: None,
            }),
        }
    }

    /// Shares signals, open sockets and room members with the other replicas through
    /// Redis.
    pub async fn connect(url: &str, per_user: u32) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let link = RedisLink::connect(
            client.clone(),
            REDIS_DEADLINE,
            Duration::from_secs(5),
            "live signals reach this replica's sessions only (others reread on their safety poll), and presence and the socket cap are unavailable",
        )
        .await?;
        let state: Arc<Mutex<State>> = Arc::default();
        let origin = uuid::Uuid::now_v7().into_bytes();
        let on_message = {
            let state = state.clone();
            move |message: Vec<u8>| {
                // Our own sessions heard it when it was sent.
                if let Some(signal) = decode(&origin, &message) {
                    state.lock().expect("live hub lock").tell(&signal);
                }
                async {}
            }
        };
        let on_gap = {
            let state = state.clone();
            move || state.lock().expect("live hub lock").tell(&Signal::Resync)
        };
        let follower =
            duovarsity_common::pubsub::follow(client, CHANNEL, on_message, on_gap).await?;
        let renewer = tokio::spawn(renew_leases(link.clone(), state.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                state,
                per_user,
                redis: Some(Shared {
                    origin,
                    link,
                    follower,
                    renewer,
                }),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().expect("live hub lock")
    }

    /// A new session, told nothing until it follows users or rooms.
    pub fn register(&self) -> Arc<SessionInbox> {
        let mut state = self.state();
        state.next_session += 1;
        let inbox = Arc::new(SessionInbox {
            id: state.next_session,
            pending: Mutex::default(),
            ready: Notify::new(),
            overflow: CancellationToken::new(),
        });
        state.sessions.insert(inbox.id, inbox.clone());
        inbox
    }

    /// The version of a room's presence: it changes whenever its members change, here or
    /// on another replica (0 before any change).
    pub fn presence_version(&self, topic: &str) -> u64 {
        self.state().presence.get(topic).copied().unwrap_or(0)
    }

    /// Forgets a session (its sockets were closed through [`LiveHub::close_socket`]).
    pub fn unregister(&self, session: u64) {
        let mut state = self.state();
        state.sessions.remove(&session);
        state.users.retain(|_, sessions| {
            sessions.remove(&session);
            !sessions.is_empty()
        });
        state.rooms.retain(|_, sessions| {
            sessions.remove(&session);
            !sessions.is_empty()
        });
        let State {
            rooms, presence, ..
        } = &mut *state;
        presence.retain(|topic, _| rooms.contains_key(topic));
    }

    /// The session hears about `user` (`room: false`) or the room `topic` (`room: true`).
    pub fn follow(&self, session: u64, room: bool, key: &str) {
        let mut state = self.state();
        let map = if room {
            &mut state.rooms
        } else {
            &mut state.users
        };
        map.entry(key.to_string()).or_default().insert(session);
    }

    pub fn unfollow(&self, session: u64, room: bool, key: &str) {
        let mut state = self.state();
        let map = if room {
            &mut state.rooms
        } else {
            &mut state.users
        };
        if let Some(sessions) = map.get_mut(key) {
            sessions.remove(&session);
            if sessions.is_empty() {
                map.remove(key);
                if room {
                    state.presence.remove(key);
                }
            }
        }
    }

    /// Tells every session that follows the signal's user or room, on every replica.
    pub async fn signal(&self, signal: Signal) {
        self.state().tell(&signal);
        if let Some(shared) = &self.inner.redis {
            // Unreached, other replicas' sessions still reread on their safety poll.
            let message = encode(&shared.origin, &signal);
            let mut connection = shared.link.connection();
            shared
                .link
                .call(
                    "live_publish",
                    connection.publish::<_, _, ()>(CHANNEL, message),
                )
                .await;
        }
    }

    /// Wakes many users at once (an announcement reaching a course's inboxes): one
    /// round trip to Redis.
    pub async fn wake_all(&self, users: &[String]) {
        {
            let mut state = self.state();
            for user in users {
                state.tell(&Signal::Wake(user.clone()));
            }
        }
        if let Some(shared) = &self.inner.redis {
            let mut pipe = redis::pipe();
            for user in users {
                pipe.publish(CHANNEL, encode(&shared.origin, &Signal::Wake(user.clone())))
                    .ignore();
            }
            let mut connection = shared.link.connection();
            shared
                .link
                .call("live_publish", pipe.query_async::<()>(&mut connection))
                .await;
        }
    }
}
