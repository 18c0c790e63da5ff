//! How flags reach every process: the owner stores the whole document under
//! [`KEY`] in Redis and publishes it on [`CHANNEL`] after every change; every process
//! follows the channel (a change is in use everywhere within milliseconds) and re-reads
//! the key every `reload` period and after the subscription was lost (a missed message
//! costs at most one period). With Redis down, processes keep the set they have.

use std::time::Duration;

use redis::AsyncCommands as _;
use tokio_util::sync::CancellationToken;

use super::{Document, FlagSet, Flags};
use crate::pubsub::{RedisLink, follow};

/// The Redis key holding the current document.
pub const KEY: &str = "duovarsity:flags";
/// The channel every change is published on.
pub const CHANNEL: &str = "duovarsity:flags";

/// Installs a published document (ignored when it does not compile or is older).
pub fn install(flags: &Flags, payload: &[u8]) {
    let document: Document = match serde_json::from_slice(payload) {
        Ok(document) => document,
        Err(error) => {
            tracing::warn!(%error, "ignoring an unreadable flags document");
            return;
        }
    };
    match FlagSet::compile(&document) {
        Ok(set) => {
            let version = set.version;
            if flags.replace(set) {
                tracing::debug!(version, "flags updated");
            }
        }
        Err(error) => tracing::warn!(%error, "ignoring a flags document that does not compile"),
    }
}

/// Stores and publishes `document` (the owner, after a change and on its periodic reload).
pub async fn publish(link: &RedisLink, document: &Document) {
    let Ok(payload) = serde_json::to_vec(document) else {
        return;
    };
    let mut connection = link.connection();
    let stored = link
        .call("flags_store", async {
            connection.set::<_, _, ()>(KEY, payload.as_slice()).await
        })
        .await;
    let mut connection = link.connection();
    let published = link
        .call("flags_publish", async {
            connection
                .publish::<_, _, i64>(CHANNEL, payload.as_slice())
                .await
        })
        .await;
    if stored.is_none() || published.is_none() {
        metrics::counter!("flags_publish_failures_total").increment(1);
    }
}

/// Reads the stored document into `flags`.
async fn fetch(link: &RedisLink, flags: &Flags) {
    let mut connection = link.connection();
    if let Some(Some(payload)) = link
        .call("flags_fetch", async {
            connection.get::<_, Option<Vec<u8>>>(KEY).await
        })
        .await
    {
        install(flags, &payload);
    }
}

/// Follows changes until `shutdown`: the channel, and the stored document every `reload`
/// and after the subscription was lost. Without a subscription (Redis down at start), the
/// periodic re-read alone.
pub async fn run(
    flags: Flags,
    client: redis::Client,
    link: RedisLink,
    reload: Duration,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let on_message = {
        let flags = flags.clone();
        move |payload: Vec<u8>| {
            install(&flags, &payload);
            std::future::ready(())
        }
    };
    let (gap_tx, mut gaps) = tokio::sync::mpsc::unbounded_channel::<()>();
    let subscription = follow(client, CHANNEL, on_message, move || {
        let _ = gap_tx.send(());
    })
    .await;
    if let Err(error) = &subscription {
        tracing::warn!(%error, "flags: cannot subscribe to Redis; re-reading the stored flags every {reload:?} instead");
    }
    fetch(&link, &flags).await;
    if let Some(ready) = ready {
        let _ = ready.send(());
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + reload, reload);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => fetch(&link, &flags).await,
            Some(()) = gaps.recv() => fetch(&link, &flags).await,
        }
    }
    if let Ok(task) = subscription {
        task.abort();
    }
}

/// A process's flags with their way in and out: followed through Redis when configured
/// (started here), published by the owner through [`Distribution::publish`].
#[derive(Clone)]
pub struct Distribution {
    pub flags: Flags,
    link: Option<RedisLink>,
}

impl Distribution {
    /// In-process only (embedded mode, unit tests): the owner's writes are all there is.
    pub fn local() -> Self {
        Self {
            flags: Flags::new(),
            link: None,
        }
    }

    /// Follows `redis_url` (when set) until `shutdown`, re-reading every `reload`.
    pub async fn connect(
        redis_url: Option<&str>,
        reload: Duration,
        shutdown: CancellationToken,
    ) -> Result<Self, redis::RedisError> {
        let Some(url) = redis_url else {
            return Ok(Self::local());
        };
        let client = redis::Client::open(url)?;
        let link = RedisLink::connect(
            client.clone(),
            crate::pubsub::REDIS_DEADLINE,
            Duration::from_secs(1),
            "flags keep the last set this process received",
        )
        .await?;
        let flags = Flags::new();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        tokio::spawn({
            let (flags, link) = (flags.clone(), link.clone());
            async move { run(flags, client, link, reload, shutdown, Some(ready_tx)).await }
        });
        // Subscribed and the stored set read (or Redis found down) before serving.
        let _ = ready.await;
        Ok(Self {
            flags,
            link: Some(link),
        })
    }

    /// Installs `set` here and hands its document to every other process.
    pub async fn publish(&self, set: FlagSet) {
        let document = set.document();
        self.flags.replace(set);
        if let Some(link) = &self.link {
            publish(link, &document).await;
        }
    }
}
