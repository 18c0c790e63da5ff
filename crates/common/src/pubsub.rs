//! Redis between replicas: a connection whose every call has a deadline
//! ([`RedisLink`]), and following a pub/sub channel for the life of a process (cache
//! invalidations, "this user has something new").
//!
//! Redis accelerates; it is never needed to answer. A call that fails or misses its
//! deadline makes the link leave Redis alone for a while (callers fall back at once instead
//! of waiting again), is counted in `redis_unavailable_total{op}`, and is logged once per
//! outage; the first call that succeeds afterwards logs the recovery.
//!
//! Pub/sub is fire-and-forget: while the subscription is down, messages are lost. So when
//! it comes back, the follower is told through `on_gap`, and does whatever makes up for
//! anything it may have missed (drop all cached entries, wake every live stream).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// The default deadline of one Redis call (or reconnection attempt).
pub const REDIS_DEADLINE: Duration = Duration::from_millis(250);

/// A Redis connection behind a deadline, left alone for a while after it fails.
#[derive(Clone)]
pub struct RedisLink {
    connection: ConnectionManager,
    deadline: Duration,
    retry_after: Duration,
    /// What callers do while Redis is down, for the log.
    fallback: &'static str,
    /// Set while Redis is considered down: until when to leave it alone.
    down_until: Arc<Mutex<Option<Instant>>>,
}

impl RedisLink {
    /// Connects (within `deadline`); after a failed call, Redis is skipped for
    /// `retry_after`. `fallback` says in the outage's log line what callers do meanwhile.
    pub async fn connect(
        client: redis::Client,
        deadline: Duration,
        retry_after: Duration,
        fallback: &'static str,
    ) -> Result<Self, redis::RedisError> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(deadline)
            .set_connection_timeout(deadline)
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            connection,
            deadline,
            retry_after,
            fallback,
            down_until: Arc::new(Mutex::new(None)),
        })
    }

    /// A handle for building a call to pass to [`RedisLink::call`].
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Whether Redis answers a PING within the deadline now (readiness; not skipped while
    /// the link leaves Redis alone).
    pub async fn ping(&self) -> Result<(), String> {
        let mut connection = self.connection();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        match tokio::time::timeout(self.deadline, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("redis: {error}")),
            Err(_) => Err(format!("redis: no answer within {:?}", self.deadline)),
        }
    }

    /// Runs one Redis call within the deadline; `None` when Redis is down, failed or slow.
    pub async fn call<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        let now = Instant::now();
        if self
            .down_until
            .lock()
            .expect("redis state lock")
            .is_some_and(|until| now < until)
        {
            return None;
        }
        let outcome = match tokio::time::timeout(self.deadline, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.deadline)),
        };
        let mut down_until = self.down_until.lock().expect("redis state lock");
        match outcome {
            Ok(value) => {
                if down_until.take().is_some() {
                    tracing::info!(op, "Redis answers again");
                }
                Some(value)
            }
            Err(error) => {
                metrics::counter!("redis_unavailable_total", "op" => op).increment(1);
                if down_until.is_none() {
                    tracing::warn!(%error, op, retry_after = ?self.retry_after, "Redis is unavailable; {}", self.fallback);
                }
                *down_until = Some(Instant::now() + self.retry_after);
                None
            }
        }
    }
}

/// Subscribes to `channel` (returning only once subscribed, so nothing published after
/// this returns is missed) and spawns a task that runs `on_message` for each message, and
/// `on_gap` after resubscribing when the connection was lost. Resubscribes with backoff.
pub async fn follow<M, MF, G>(
    client: redis::Client,
    channel: &'static str,
    mut on_message: M,
    mut on_gap: G,
) -> Result<tokio::task::JoinHandle<()>, redis::RedisError>
where
    M: FnMut(Vec<u8>) -> MF + Send + 'static,
    MF: Future<Output = ()> + Send,
    G: FnMut() + Send + 'static,
{
    let mut pubsub = subscribe(&client, channel).await?;
    Ok(tokio::spawn(async move {
        loop {
            {
                let mut messages = pubsub.on_message();
                while let Some(message) = messages.next().await {
                    if let Ok(payload) = message.get_payload::<Vec<u8>>() {
                        on_message(payload).await;
                    }
                }
            }
            tracing::warn!(channel, "Redis subscription lost; resubscribing");
            let mut backoff =
                crate::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            pubsub = loop {
                backoff.wait().await;
                if let Ok(pubsub) = subscribe(&client, channel).await {
                    break pubsub;
                }
            };
            on_gap();
        }
    }))
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}
