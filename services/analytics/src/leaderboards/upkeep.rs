//! Keeping the sets in step with the database: the rebuild (one `MULTI` per week), the
//! agreement check and the maintenance loop that runs them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use duovarsity_common::Error;
use duovarsity_common::time::now_millis;
use tokio_util::sync::CancellationToken;

use super::{GLOBAL, KEY_TTL_SECS, Leaderboards, key, live_weeks};
use crate::store::learners as store;
use crate::xp;

/// How often the maintenance loop looks at stale sets.
const MAINTAIN_EVERY: Duration = Duration::from_secs(5);

impl Leaderboards {
    /// Replaces the live weeks' sets with what the database holds; returns the members
    /// written. Clears the stale mark.
    pub async fn rebuild(&self) -> Result<usize, Error> {
        let Some(redis) = &self.redis else {
            return Ok(0);
        };
        let _guard = self.lock.lock().await;
        let mut written = 0;
        let mut connection = redis.connection();
        let unavailable = || Error::Unavailable {
            message: "Redis did not answer during the rebuild".into(),
            retry_after: None,
        };
        for week in live_weeks() {
            let scopes = store::weekly_scopes(&self.db, &week).await?;
            let pattern = key(&week, "*");
            let mut existing: Vec<String> = Vec::new();
            let mut cursor = 0_u64;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000);
                let scan = scan.query_async::<(u64, Vec<String>)>(&mut connection);
                let (next, keys) = redis
                    .call("leaderboard_rebuild", scan)
                    .await
                    .ok_or_else(unavailable)?;
                existing.extend(keys);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            let mut pipe = redis::pipe();
            pipe.atomic();
            for stray in existing
                .iter()
                .filter(|k| !scopes.iter().any(|s| key(&week, s) == **k))
            {
                pipe.cmd("DEL").arg(stray).ignore();
            }
            for scope in &scopes {
                let members = store::weekly_all(&self.db, &week, scope).await?;
                let key = key(&week, scope);
                pipe.cmd("DEL").arg(&key).ignore();
                for chunk in members.chunks(500) {
                    let command = pipe.cmd("ZADD").arg(&key);
                    for (learner, xp) in chunk {
                        command.arg(*xp).arg(learner);
                    }
                    command.ignore();
                }
                pipe.cmd("EXPIRE").arg(&key).arg(KEY_TTL_SECS).ignore();
                written += members.len();
            }
            redis
                .call(
                    "leaderboard_rebuild",
                    pipe.query_async::<()>(&mut connection),
                )
                .await
                .ok_or_else(unavailable)?;
        }
        self.stale.store(false, Ordering::SeqCst);
        tracing::info!(members = written, "leaderboards rebuilt from the database");
        metrics::counter!("leaderboard_rebuilds_total").increment(1);
        Ok(written)
    }

    /// Whether the current week's global set agrees with the database (its size and top
    /// ten); `None` when Redis does not answer.
    pub async fn agrees(&self) -> Result<Option<bool>, Error> {
        let Some(redis) = &self.redis else {
            return Ok(Some(true));
        };
        let week = xp::week_of(now_millis());
        let truth = store::weekly_top(&self.db, &week, GLOBAL, 10).await?;
        let count = store::weekly_count(&self.db, &week, GLOBAL).await?;
        let key = key(&week, GLOBAL);
        let mut pipe = redis::pipe();
        pipe.cmd("ZCARD").arg(&key);
        pipe.cmd("ZREVRANGE")
            .arg(&key)
            .arg(0)
            .arg(9)
            .arg("WITHSCORES");
        let mut connection = redis.connection();
        let Some((size, top)): Option<(i64, Vec<(String, f64)>)> = redis
            .call("leaderboard_check", pipe.query_async(&mut connection))
            .await
        else {
            return Ok(None);
        };
        let top: Vec<(String, i64)> = top.into_iter().map(|(l, s)| (l, s as i64)).collect();
        Ok(Some(size == count && top == truth))
    }

    /// The start-up check, then every few seconds: rebuild stale (or disagreeing) sets once
    /// Redis answers. Runs until `shutdown`.
    /// (A background task runs until shutdown: without Redis, it only waits.)
    pub async fn maintain(self, shutdown: CancellationToken) {
        if self.redis.is_none() {
            shutdown.cancelled().await;
            return;
        }
        loop {
            if self.stale.load(Ordering::SeqCst) {
                match self.agrees().await {
                    Ok(Some(true)) => self.stale.store(false, Ordering::SeqCst),
                    Ok(Some(false)) => {
                        if let Err(error) = self.rebuild().await {
                            tracing::warn!(%error, "rebuilding the leaderboards failed; reads stay on the database");
                        }
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "checking the leaderboards failed"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(MAINTAIN_EVERY) => {}
            }
        }
    }
}
