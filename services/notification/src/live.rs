//! Who is connected, and waking their streams when they have something new.
//!
//! A live stream registers its user here and waits for a wake-up, then rereads the inbox
//! after the last sequence number it sent; the wake-up carries no data, so a lost or
//! duplicated one never loses or repeats a notification.
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

use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
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
    redis: Option<Shared>,
}

struct Streams {
    wake: broadcast::Sender<()>,
    count: i32,
}

struct Shared {
    connection: ConnectionManager,
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
    /// This process only.
    pub fn local() -> Self {
        Self {
            inner: Arc::new(Inner {
                users: Users::default(),
                redis: None,
            }),
        }
    }

    /// Shares wake-ups and presence with the other replicas through Redis.
    pub async fn connect(url: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let connection = ConnectionManager::new(client.clone()).await?;
        let users = Users::default();
        let on_message = {
            let users = users.clone();
            move |user: String| {
                wake_streams(&users, Some(&user));
                async {}
            }
        };
        let on_gap = {
            let users = users.clone();
            move || wake_streams(&users, None)
        };
        let follower =
            duovarsity_common::pubsub::follow(client, CHANNEL, on_message, on_gap).await?;
        let (presence, updates) = mpsc::unbounded_channel();
        tokio::spawn(write_presence(connection.clone(), updates));
        Ok(Self {
            inner: Arc::new(Inner {
                users,
                redis: Some(Shared {
                    connection,
                    presence,
                    follower,
                }),
            }),
        })
    }

    /// Registers a stream of `user`; it counts as present and hears wake-ups until the
    /// returned handle is dropped.
    pub fn attach(&self, user: &str) -> Attached {
        let wake = {
            let mut users = self.inner.users.lock().expect("live users lock");
            let streams = users.entry(user.to_string()).or_insert_with(|| Streams {
                wake: broadcast::channel(1).0,
                count: 0,
            });
            streams.count += 1;
            streams.wake.subscribe()
        };
        self.count(user, 1);
        Attached {
            hub: self.clone(),
            user: user.to_string(),
            wake,
        }
    }

    /// Tells every stream of `user`, on every replica, to look for news.
    pub async fn wake(&self, user: &str) {
        wake_streams(&self.inner.users, Some(user));
        if let Some(shared) = &self.inner.redis {
            let mut connection = shared.connection.clone();
            if let Err(error) = connection.publish::<_, _, ()>(CHANNEL, user).await {
                // The other replicas' streams still reread on their safety poll.
                tracing::warn!(%error, "publishing a live wake-up failed");
            }
        }
    }

    /// How many live streams `user` has (on every replica when Redis is shared).
    pub async fn connections(&self, user: &str) -> Result<i64, redis::RedisError> {
        let Some(shared) = &self.inner.redis else {
            return Ok(self.local_connections(user));
        };
        let mut connection = shared.connection.clone();
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
                streams.count -= 1;
                if streams.count <= 0 {
                    users.remove(user);
                }
            }
        }
        self.count(user, -1);
    }
}

/// A registered stream: wake-ups arrive on [`Attached::woken`].
pub struct Attached {
    hub: LiveHub,
    user: String,
    wake: broadcast::Receiver<()>,
}

impl Attached {
    /// Waits for the next wake-up. Several missed wake-ups count as one.
    pub async fn woken(&mut self) {
        match self.wake.recv().await {
            Ok(()) | Err(broadcast::error::RecvError::Lagged(_)) => {}
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

/// Wakes the streams of `user` on this replica, or every stream.
fn wake_streams(users: &Mutex<HashMap<String, Streams>>, user: Option<&str>) {
    let users = users.lock().expect("live users lock");
    match user {
        Some(user) => {
            if let Some(streams) = users.get(user) {
                let _ = streams.wake.send(());
            }
        }
        None => {
            for streams in users.values() {
                let _ = streams.wake.send(());
            }
        }
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
async fn write_presence(
    mut connection: ConnectionManager,
    mut updates: mpsc::UnboundedReceiver<(String, i64)>,
) {
    let replica = uuid::Uuid::now_v7().to_string();
    let key = presence_key(&replica);
    let mut refresh = tokio::time::interval(PRESENCE_REFRESH);
    loop {
        tokio::select! {
            update = updates.recv() => {
                let Some((user, delta)) = update else { break };
                let result: Result<i64, _> = connection.hincr(&key, &user, delta).await;
                match result {
                    Ok(count) if count <= 0 => {
                        let _: Result<(), _> = connection.hdel(&key, &user).await;
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, "updating presence in Redis failed"),
                }
            }
            _ = refresh.tick() => {
                let result: Result<(), _> = redis::pipe()
                    .expire(&key, PRESENCE_TTL.as_secs() as i64)
                    .ignore()
                    .zadd(REPLICAS, &replica, now_secs())
                    .ignore()
                    .zrembyscore(REPLICAS, "-inf", now_secs() - PRESENCE_TTL.as_secs_f64())
                    .ignore()
                    .query_async(&mut connection)
                    .await;
                if let Err(error) = result {
                    tracing::warn!(%error, "refreshing presence in Redis failed");
                }
            }
        }
    }
    let _: Result<(), _> = redis::pipe()
        .del(&key)
        .zrem(REPLICAS, &replica)
        .query_async(&mut connection)
        .await;
}
