//! Who is connected, and waking their streams when they have something new.
//!
//! A live stream registers its user here and waits for a signal. A wake-up makes it
//! reread the inbox after the last sequence number it sent; it carries no data, so a lost
//! or duplicated one never loses or repeats a notification. A progress signal carries a
//! lesson progress change to pass on as it is (momentary: not kept for reconnects).
//!
//! - One process: wake-ups go straight to the user's streams (only theirs, so an event
//!   costs as much as that user's connections, not everyone's).
//! - Several replicas (`redis_url` set): a wake-up is also published on a Redis channel and
//!   every replica wakes its own streams of that user, so a user connected to replica A
//!   hears what replica B consumed. After the subscription was lost, every stream is woken.
//!   Presence counts go to a per-replica Redis hash that expires unless refreshed, so the
//!   connections of a replica that died stop counting within [`PRESENCE_TTL`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duovarsity_common::pubsub::{REDIS_DEADLINE, RedisLink};
use duovarsity_proto::notification::LessonProgress;
use prost::Message as _;
use redis::AsyncCommands as _;
use tokio::sync::{broadcast, mpsc};

const CHANNEL: &str = "duovarsity:notification:wake";
const REPLICAS: &str = "duovarsity:presence:replicas";
/// A replica's presence counts outlive it by at most this long.
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);
const PRESENCE_REFRESH: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct LiveHub {
    inner: Arc<Inner>,
}

type Users = Arc<Mutex<HashMap<String, Streams>>>;

struct Inner {
    /// The streams of each connected user of this replica.
    users: Users,
    /// Streams one user may have on this replica.
    per_user: u32,
    redis: Option<Shared>,
}

struct Streams {
    signals: broadcast::Sender<Signal>,
    count: u32,
}

/// What a stream is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// Look in the inbox for news.
    Wake,
    /// The user's progress in a lesson changed.
    Progress(LessonProgress),
}

/// Signals a slow stream may fall behind by before it is told only to look in the inbox.
const SIGNALS_PER_STREAM: usize = 16;

struct Shared {
    /// Tells this replica's own messages apart when they come back from the channel.
    origin: [u8; 16],
    link: RedisLink,
    /// Presence changes, applied to Redis in order by one task (which cleans up and ends
    /// when this sender is dropped).
    presence: mpsc::UnboundedSender<(String, i64)>,
    follower: tokio::task::JoinHandle<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl LiveHub {
    /// This process only; at most `per_user` streams per user.
    pub fn local(per_user: u32) -> Self {
        Self {
            inner: Arc::new(Inner {
                users: Users::default(),
                per_user,
                redis: None,
            }),
        }
    }

    /// Shares wake-ups and presence with the other replicas through Redis; at most
    /// `per_user` streams per user on this replica.
    pub async fn connect(url: &str, per_user: u32) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let link = RedisLink::connect(
            client.clone(),
            REDIS_DEADLINE,
            Duration::from_secs(5),
            "live streams are woken on this replica only (others reread on their safety poll) and presence is unavailable",
        )
        .await?;
        let users = Users::default();
        let origin = uuid::Uuid::now_v7().into_bytes();
        let on_message = {
            let users = users.clone();
            move |message: Vec<u8>| {
                // Our own streams heard it when it was sent.
                if let Some((user, signal)) = decode(&origin, &message) {
                    signal_streams(&users, Some(&user), signal);
                }
                async {}
            }
        };
        let on_gap = {
            let users = users.clone();
            move || signal_streams(&users, None, Signal::Wake)
        };
        let follower =
            duovarsity_common::pubsub::follow(client, CHANNEL, on_message, on_gap).await?;
        let (presence, updates) = mpsc::unbounded_channel();
        tokio::spawn(write_presence(link.clone(), updates));
        Ok(Self {
            inner: Arc::new(Inner {
                users,
                per_user,
                redis: Some(Shared {
                    origin,
                    link,
                    presence,
                    follower,
                }),
            }),
        })
    }

    /// Registers a stream of `user`; it counts as present and hears signals until the
    /// returned handle is dropped. Refused when the user has all their streams already.
    pub fn attach(&self, user: &str) -> Result<Attached, duovarsity_common::Error> {
        let signals = {
            let mut users = self.inner.users.lock().expect("live users lock");
            let streams = users.entry(user.to_string()).or_insert_with(|| Streams {
                signals: broadcast::channel(SIGNALS_PER_STREAM).0,
                count: 0,
            });
            if streams.count >= self.inner.per_user {
                return Err(duovarsity_common::Error::ResourceExhausted {
                    reason: "RESOURCE_EXHAUSTED",
                    message: format!(
                        "this account already has {} live connections open; close one first",
                        self.inner.per_user
                    ),
                    retry_after: None,
                });
            }
            streams.count += 1;
            streams.signals.subscribe()
        };
        self.count(user, 1);
        Ok(Attached {
            hub: self.clone(),
            user: user.to_string(),
            signals,
        })
    }

    /// Tells every stream of `user`, on every replica, to look for news.
    pub async fn wake(&self, user: &str) {
        self.signal(user, Signal::Wake).await;
    }

    /// Passes a progress change to every stream of `user`, on every replica.
    pub async fn progress(&self, user: &str, progress: LessonProgress) {
        self.signal(user, Signal::Progress(progress)).await;
    }

    async fn signal(&self, user: &str, signal: Signal) {
        let message = self
            .inner
            .redis
            .as_ref()
            .map(|shared| encode(&shared.origin, user, &signal));
        signal_streams(&self.inner.users, Some(user), signal);
        if let (Some(shared), Some(message)) = (&self.inner.redis, message) {
            // Unreached, other replicas' streams still reread on their safety poll.
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

    /// How many live streams `user` has (on every replica when Redis is shared); `None`
    /// while Redis, which holds the other replicas' counts, is unavailable.
    pub async fn connections(&self, user: &str) -> Option<i64> {
        let Some(shared) = &self.inner.redis else {
            return Some(self.local_connections(user));
        };
        let mut connection = shared.link.connection();
        let count = async {
            let now = now_secs();
            let replicas: Vec<String> = connection
                .zrangebyscore(REPLICAS, now - PRESENCE_TTL.as_secs_f64(), "+inf")
                .await?;
            let mut pipe = redis::pipe();
            for replica in &replicas {
                pipe.hget(presence_key(replica), user);
            }
            let counts: Vec<Option<i64>> = pipe.query_async(&mut connection).await?;
            Ok(counts.into_iter().flatten().filter(|n| *n > 0).sum())
        };
        shared.link.call("presence_read", count).await
    }

    fn local_connections(&self, user: &str) -> i64 {
        self.inner
            .users
            .lock()
            .expect("live users lock")
            .get(user)
            .map_or(0, |streams| i64::from(streams.count))
    }

    fn count(&self, user: &str, delta: i64) {
        if let Some(shared) = &self.inner.redis {
            let _ = shared.presence.send((user.to_string(), delta));
        }
    }

    fn detach(&self, user: &str) {
        {
            let mut users = self.inner.users.lock().expect("live users lock");
            if let Some(streams) = users.get_mut(user) {
                streams.count = streams.count.saturating_sub(1);
                if streams.count == 0 {
                    users.remove(user);
                }
            }
        }
        self.count(user, -1);
    }
}

/// A registered stream: signals arrive on [`Attached::next`].
pub struct Attached {
    hub: LiveHub,
    user: String,
    signals: broadcast::Receiver<Signal>,
}

impl Attached {
    /// Waits for the next signal. A stream that fell behind is told to reread the inbox
    /// (the progress changes it missed are gone; the course API has the current state).
    pub async fn next(&mut self) -> Signal {
        match self.signals.recv().await {
            Ok(signal) => signal,
            Err(broadcast::error::RecvError::Lagged(_)) => Signal::Wake,
            // The hub dropped this user's streams; only happens after detach.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.hub.detach(&self.user);
    }
}

/// Signals the streams of `user` on this replica, or every stream.
fn signal_streams(users: &Mutex<HashMap<String, Streams>>, user: Option<&str>, signal: Signal) {
    let users = users.lock().expect("live users lock");
    match user {
        Some(user) => {
            if let Some(streams) = users.get(user) {
                let _ = streams.signals.send(signal);
            }
        }
        None => {
            for streams in users.values() {
                let _ = streams.signals.send(signal.clone());
            }
        }
    }
}

/// A signal on the Redis channel: the sending replica's 16-byte origin, the user id, then
/// for progress a NUL and the encoded [`LessonProgress`].
fn encode(origin: &[u8; 16], user: &str, signal: &Signal) -> Vec<u8> {
    let mut message = origin.to_vec();
    message.extend(user.as_bytes());
    if let Signal::Progress(progress) = signal {
        message.push(0);
        message.extend(progress.encode_to_vec());
    }
    message
}

/// The user and signal of a message from another replica; None for this replica's own
/// messages and for garbage.
fn decode(origin: &[u8; 16], message: &[u8]) -> Option<(String, Signal)> {
    let (sender, message) = message.split_at_checked(16)?;
    if sender == origin {
        return None;
    }
    match message.iter().position(|byte| *byte == 0) {
        None => Some((String::from_utf8(message.to_vec()).ok()?, Signal::Wake)),
        Some(at) => Some((
            String::from_utf8(message[..at].to_vec()).ok()?,
            Signal::Progress(LessonProgress::decode(&message[at + 1..]).ok()?),
        )),
    }
}

fn presence_key(replica: &str) -> String {
    format!("duovarsity:presence:{replica}")
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Applies presence changes in order to this replica's hash, and keeps the hash and the
/// replica's entry in the replica set fresh.
async fn write_presence(link: RedisLink, mut updates: mpsc::UnboundedReceiver<(String, i64)>) {
    let replica = uuid::Uuid::now_v7().to_string();
    let key = presence_key(&replica);
    let mut refresh = tokio::time::interval(PRESENCE_REFRESH);
    let mut connection = link.connection();
    loop {
        tokio::select! {
            update = updates.recv() => {
                let Some((user, delta)) = update else { break };
                let count: Option<i64> = link.call("presence_write", connection.hincr(&key, &user, delta)).await;
                if count.is_some_and(|count| count <= 0) {
                    link.call("presence_write", connection.hdel::<_, _, ()>(&key, &user)).await;
                }
            }
            _ = refresh.tick() => {
                let mut keepalive = redis::pipe();
                keepalive
                    .expire(&key, PRESENCE_TTL.as_secs() as i64)
                    .ignore()
                    .zadd(REPLICAS, &replica, now_secs())
                    .ignore()
                    .zrembyscore(REPLICAS, "-inf", now_secs() - PRESENCE_TTL.as_secs_f64())
                    .ignore();
                link.call("presence_write", keepalive.query_async::<()>(&mut connection)).await;
            }
        }
    }
    let mut cleanup = redis::pipe();
    cleanup.del(&key).zrem(REPLICAS, &replica);
    link.call("presence_write", cleanup.query_async::<()>(&mut connection))
        .await;
}
