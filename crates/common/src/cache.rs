//! A two-level read-through cache for bytes (encoded protobuf): L1 in process (moka:
//! bounded, with a TTL) over an optional L2 in Redis shared by every replica.
//!
//! - Single flight: concurrent misses of one key in a process make one load (moka's
//!   `try_get_with` runs one initialiser and hands its result to every waiter).
//! - Invalidation on write: [`Cache::invalidate`] removes the key from this process's L1,
//!   deletes it from L2 and publishes it on a Redis channel; every replica subscribed to
//!   the channel drops it from its L1. Staleness bound: the pub/sub delay (milliseconds).
//!   If a replica loses its subscription it still expires entries after the L1 TTL, so the
//!   worst case is `l1_ttl` (default 10 s).
//! - A load that started before an invalidation and finished after it is not kept: each
//!   cache counts invalidations, and a load that saw the counter move drops its entry.
//! - Redis is an accelerator, never a dependency of a read: every Redis call has a deadline
//!   (`redis_deadline`), and after a failure the caches leave Redis alone for
//!   `redis_retry_after` — a miss loads from the store, an invalidation reaches this
//!   process's L1 and other replicas converge within the L1 TTL. Invalidations that could
//!   not be sent are kept (up to 10,000) and sent when the subscription is back, so an L2
//!   entry that outlived the outage is not served stale. The outage is logged once
//!   when it starts and once when Redis answers again (the connection reconnects by
//!   itself), and counted in `redis_unavailable_total{op}`.
//! - Observers: [`CacheHub::invalidations`] hears every invalidation this process makes or
//!   receives (the gateway's edge cache drops responses built from the entry). A gap in
//!   the subscription is told as [`Invalidation::All`].
//! - Metrics: `cache_requests_total{cache, result="hit"|"miss"}` (L1) and
//!   `cache_l2_requests_total{cache, result}` (`skipped` while Redis is down).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::AsyncCommands;

use crate::error::Error;
use crate::pubsub::{REDIS_DEADLINE, RedisLink};

/// The course service's cache of course outlines, keyed by course id, invalidated by every
/// change to a course (price, status, sections, lessons). Answers whose visibility follows
/// a course (course pages, lesson content, media) name it in their cache tags, so that edge
/// caches drop them when the course changes.
pub const COURSE_OUTLINE_CACHE: &str = "course_outline";

/// The Redis channel carrying invalidated keys as `<cache>\n<key>`.
const INVALIDATION_CHANNEL: &str = "duovarsity:cache:invalidate";
/// Invalidations kept while Redis is unreachable, sent once it is back (beyond this many,
/// the rest rely on the TTLs alone).
const MAX_UNSENT: usize = 10_000;

/// What an observer of a hub's caches is told ([`CacheHub::invalidations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// `key` of cache `cache` was dropped.
    Key { cache: String, key: String },
    /// Invalidations may have been missed: drop everything derived from the caches.
    All,
}

/// How many invalidations an observer may fall behind before it is told [`Invalidation::All`]
/// (as a lagging broadcast receiver).
const OBSERVER_BACKLOG: usize = 4096;

type Observers = tokio::sync::broadcast::Sender<Invalidation>;

fn tell(observers: &Observers, cache: &str, key: &str) {
    if observers.receiver_count() > 0 {
        let _ = observers.send(Invalidation::Key {
            cache: cache.to_string(),
            key: key.to_string(),
        });
    }
}

/// Invalidation messages (`<cache>\n<key>`) that did not reach Redis yet.
type Unsent = Arc<Mutex<std::collections::HashSet<String>>>;

/// Settings shared by every cache of a process.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// `redis://…` for L2 and cross-replica invalidation; `None` in embedded mode.
    pub redis_url: Option<String>,
    pub l1_ttl: Duration,
    pub l1_capacity: u64,
    pub l2_ttl: Duration,
    /// The longest one Redis call (or reconnection attempt) may take.
    pub redis_deadline: Duration,
    /// How long the caches leave Redis alone after a failed call.
    pub redis_retry_after: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            redis_url: None,
            l1_ttl: Duration::from_secs(10),
            l1_capacity: 10_000,
            l2_ttl: Duration::from_secs(300),
            redis_deadline: REDIS_DEADLINE,
            redis_retry_after: Duration::from_secs(5),
        }
    }
}

/// The process-wide part: the Redis connection and the invalidation subscriber, which
/// routes each invalidated key to the named cache.
#[derive(Clone)]
pub struct CacheHub {
    settings: CacheSettings,
    redis: Option<RedisLink>,
    caches: Arc<Mutex<HashMap<&'static str, Cache>>>,
    subscriber: Option<Arc<tokio::task::JoinHandle<()>>>,
    unsent: Unsent,
    observers: Observers,
}

impl CacheHub {
    /// Connects to Redis when configured and starts listening for invalidations.
    pub async fn connect(settings: CacheSettings) -> Result<Self, redis::RedisError> {
        let caches: Arc<Mutex<HashMap<&'static str, Cache>>> = Arc::default();
        let unsent = Unsent::default();
        let observers = Observers::new(OBSERVER_BACKLOG);
        let (redis, subscriber) = match &settings.redis_url {
            Some(url) => {
                let client = redis::Client::open(url.as_str())?;
                let manager = RedisLink::connect(
                    client.clone(),
                    settings.redis_deadline,
                    settings.redis_retry_after,
                    "caches serve from L1 and the store, and other replicas converge within the L1 TTL",
                )
                .await?;
                // Subscribed before serving, so no invalidation after start is missed.
                let on_message = {
                    let (caches, observers) = (caches.clone(), observers.clone());
                    move |payload: Vec<u8>| {
                        let (caches, observers) = (caches.clone(), observers.clone());
                        async move {
                            if let Ok(payload) = String::from_utf8(payload) {
                                apply_invalidation(&caches, &observers, &payload).await;
                            }
                        }
                    }
                };
                let on_gap = {
                    let (caches, link, unsent) = (caches.clone(), manager.clone(), unsent.clone());
                    let observers = observers.clone();
                    move || {
                        let _ = observers.send(Invalidation::All);
                        tracing::warn!(
                            "cache invalidations may have been missed; dropping every L1 entry"
                        );
                        for cache in caches.lock().expect("cache registry lock").values() {
                            cache.invalidations.fetch_add(1, Ordering::SeqCst);
                            cache.l1.invalidate_all();
                        }
                        // Ours that did not get out: other replicas and L2 learn them now.
                        tokio::spawn(send_unsent(link.clone(), unsent.clone()));
                    }
                };
                let task =
                    crate::pubsub::follow(client, INVALIDATION_CHANNEL, on_message, on_gap).await?;
                (Some(manager), Some(Arc::new(task)))
            }
            None => (None, None),
        };
        Ok(Self {
            settings,
            redis,
            caches,
            subscriber,
            unsent,
            observers,
        })
    }

    /// An in-process hub (no Redis): what embedded mode and unit tests use.
    pub fn local() -> Self {
        Self {
            settings: CacheSettings::default(),
            redis: None,
            caches: Arc::default(),
            subscriber: None,
            unsent: Unsent::default(),
            observers: Observers::new(OBSERVER_BACKLOG),
        }
    }

    /// Every invalidation from now on: those of this process's caches and those other
    /// replicas send through Redis. A receiver that falls behind gets `Lagged`: treat it
    /// as [`Invalidation::All`].
    pub fn invalidations(&self) -> tokio::sync::broadcast::Receiver<Invalidation> {
        self.observers.subscribe()
    }

    /// The cache called `name` (created on first use).
    pub fn cache(&self, name: &'static str) -> Cache {
        self.cache_with_ttl(name, self.settings.l1_ttl, self.settings.l2_ttl)
    }

    /// A cache of values that never go stale under their key (content-addressed, such as
    /// AI answers keyed by everything that shapes them): both levels keep an entry for
    /// `ttl`, instead of the short L1 lifetime that bounds staleness elsewhere.
    pub fn immutable_cache(&self, name: &'static str, ttl: Duration) -> Cache {
        self.cache_with_ttl(name, ttl, ttl)
    }

    fn cache_with_ttl(&self, name: &'static str, l1_ttl: Duration, l2_ttl: Duration) -> Cache {
        let mut caches = self.caches.lock().expect("cache registry lock");
        caches
            .entry(name)
            .or_insert_with(|| Cache {
                name,
                l1: moka::future::Cache::builder()
                    .max_capacity(self.settings.l1_capacity)
                    .time_to_live(l1_ttl)
                    .build(),
                redis: self.redis.clone(),
                l2_ttl,
                invalidations: Arc::new(AtomicU64::new(0)),
                unsent: self.unsent.clone(),
                observers: self.observers.clone(),
            })
            .clone()
    }

    /// Whether Redis answers now (diagnostics), or true without Redis.
    pub async fn ping(&self) -> Result<(), String> {
        match &self.redis {
            Some(link) => link.ping().await,
            None => Ok(()),
        }
    }
}

impl Drop for CacheHub {
    fn drop(&mut self) {
        if let Some(task) = self.subscriber.take()
            && let Some(task) = Arc::into_inner(task)
        {
            task.abort();
        }
    }
}

/// Applies one invalidation from another replica (`<cache name>\n<key>`).
async fn apply_invalidation(
    caches: &Mutex<HashMap<&'static str, Cache>>,
    observers: &Observers,
    payload: &str,
) {
    let Some((name, key)) = payload.split_once('\n') else {
        return;
    };
    tell(observers, name, key);
    let cache = caches
        .lock()
        .expect("cache registry lock")
        .get(name)
        .cloned();
    if let Some(cache) = cache {
        cache.invalidations.fetch_add(1, Ordering::SeqCst);
        cache.l1.invalidate(key).await;
    }
}

/// One named cache.
#[derive(Clone)]
pub struct Cache {
    name: &'static str,
    l1: moka::future::Cache<String, Bytes>,
    redis: Option<RedisLink>,
    l2_ttl: Duration,
    invalidations: Arc<AtomicU64>,
    unsent: Unsent,
    observers: Observers,
}

impl Cache {
    /// The cached bytes for `key`, or what `load` returns (stored in L1 and L2).
    pub async fn get_or_load<F, Fut>(&self, key: &str, load: F) -> Result<Bytes, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, Error>>,
    {
        if let Some(value) = self.l1.get(key).await {
            metrics::counter!("cache_requests_total", "cache" => self.name, "result" => "hit")
                .increment(1);
            return Ok(value);
        }
        metrics::counter!("cache_requests_total", "cache" => self.name, "result" => "miss")
            .increment(1);
        let seen = self.invalidations.load(Ordering::SeqCst);
        let value = self
            .l1
            .try_get_with(key.to_string(), self.load_through_l2(key, load))
            .await
            .map_err(|error| match Arc::try_unwrap(error) {
                Ok(error) => error,
                Err(shared) => clone_error(&shared),
            })?;
        if self.invalidations.load(Ordering::SeqCst) != seen {
            self.l1.invalidate(key).await;
        }
        Ok(value)
    }

    async fn load_through_l2<F, Fut>(&self, key: &str, load: F) -> Result<Bytes, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Bytes, Error>>,
    {
        let l2_key = self.l2_key(key);
        if let Some(l2) = &self.redis {
            let mut redis = l2.connection();
            let result = match l2
                .call("get", redis.get::<_, Option<Vec<u8>>>(&l2_key))
                .await
            {
                Some(Some(bytes)) => return Ok(l2_hit(self.name, bytes)),
                Some(None) => "miss",
                None => "skipped",
            };
            metrics::counter!("cache_l2_requests_total", "cache" => self.name, "result" => result)
                .increment(1);
        }
        let seen = self.invalidations.load(Ordering::SeqCst);
        let value = load().await?;
        if let Some(l2) = &self.redis
            && self.invalidations.load(Ordering::SeqCst) == seen
        {
            let mut redis = l2.connection();
            let ttl = self.l2_ttl.as_secs().max(1);
            l2.call(
                "set",
                redis.set_ex::<_, _, ()>(&l2_key, value.to_vec(), ttl),
            )
            .await;
        }
        Ok(value)
    }

    /// Drops `key` everywhere: this L1, L2, and (through Redis) every other replica's L1.
    pub async fn invalidate(&self, key: &str) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        // L2 first: a read between the two would otherwise refill L1 (and the edge) from
        // the old L2 entry. A load that overlaps either step sees the counter move.
        self.drop_from_l2(key).await;
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        self.l1.invalidate(key).await;
        tell(&self.observers, self.name, key);
    }

    async fn drop_from_l2(&self, key: &str) {
        if let Some(l2) = &self.redis {
            let message = format!("{}\n{key}", self.name);
            if !send_invalidation(l2, &message).await {
                // Sent when Redis is back; until then other replicas converge within their
                // L1 TTL.
                let mut unsent = self.unsent.lock().expect("unsent invalidations lock");
                if unsent.len() < MAX_UNSENT {
                    unsent.insert(message);
                } else {
                    metrics::counter!("cache_invalidations_lost_total", "cache" => self.name)
                        .increment(1);
                }
            }
        }
    }

    fn l2_key(&self, key: &str) -> String {
        l2_key(self.name, key)
    }
}

fn l2_key(cache: &str, key: &str) -> String {
    format!("duovarsity:cache:{cache}:{key}")
}

/// Deletes the L2 entry of an invalidation (`<cache>\n<key>`) and tells the other
/// replicas; false when Redis was not reached.
async fn send_invalidation(link: &RedisLink, message: &str) -> bool {
    let Some((cache, key)) = message.split_once('\n') else {
        return true;
    };
    let mut redis = link.connection();
    let reached = async {
        redis.del::<_, ()>(l2_key(cache, key)).await?;
        redis
            .publish::<_, _, ()>(INVALIDATION_CHANNEL, message)
            .await
    };
    link.call("invalidate", reached).await.is_some()
}

/// Sends the invalidations that did not reach Redis while it was down.
async fn send_unsent(link: RedisLink, unsent: Unsent) {
    let pending: Vec<String> = unsent
        .lock()
        .expect("unsent invalidations lock")
        .drain()
        .collect();
    for (index, message) in pending.iter().enumerate() {
        if !send_invalidation(&link, message).await {
            // Down again: keep the rest for the next time it comes back.
            let mut unsent = unsent.lock().expect("unsent invalidations lock");
            unsent.extend(pending[index..].iter().cloned());
            return;
        }
    }
}

fn l2_hit(cache: &'static str, bytes: Vec<u8>) -> Bytes {
    metrics::counter!("cache_l2_requests_total", "cache" => cache, "result" => "hit").increment(1);
    Bytes::from(bytes)
}

/// Errors shared between single-flight waiters are re-created for each of them.
fn clone_error(error: &Error) -> Error {
    match error {
        Error::NotFound { what } => Error::NotFound { what: what.clone() },
        Error::InvalidArgument(violations) => Error::InvalidArgument(violations.clone()),
        Error::Unavailable {
            message,
            retry_after,
        } => Error::Unavailable {
            message: message.clone(),
            retry_after: *retry_after,
        },
        Error::PermissionDenied { reason, message } => Error::PermissionDenied {
            reason,
            message: message.clone(),
        },
        _ => Error::Internal,
    }
}

#[cfg(test)]
mod tests;
