//! Following a Redis pub/sub channel for the life of a process: what replicas use to tell
//! each other things (cache invalidations, "this user has something new").
//!
//! Pub/sub is fire-and-forget: while the subscription is down, messages are lost. So when
//! it comes back, the follower is told through `on_gap`, and does whatever makes up for
//! anything it may have missed (drop all cached entries, wake every live stream).

use std::future::Future;
use std::time::Duration;

use futures::StreamExt as _;

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
            let mut delay = Duration::from_millis(100);
            pubsub = loop {
                tokio::time::sleep(delay).await;
                match subscribe(&client, channel).await {
                    Ok(pubsub) => break pubsub,
                    Err(_) => delay = (delay * 2).min(Duration::from_secs(5)),
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
