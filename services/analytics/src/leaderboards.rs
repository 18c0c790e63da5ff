//! Weekly XP leaderboards: served from Redis sorted sets (`ZINCRBY` as XP is earned,
//! `ZREVRANGE` for the top, `ZREVRANK` for the caller), with the database as the truth.
//!
//! - One set per week and scope, `duovarsity:leaderboard:<week>:<scope>` (scope `global` or
//!   a course id), for the current and the previous week (older weeks are read from the
//!   database); members are learner ids, scores XP. Learners who hide themselves are not
//!   members (their XP is still counted in the database, for themselves).
//! - Order: more XP first, and between equals the greater learner id first (what
//!   `ZREVRANGE` does, and what the database fallback orders by).
//! - After a failed Redis write the sets are **stale**: reads go to the database until a
//!   rebuild has replaced them. The start-up check rebuilds when the current week's global
//!   set disagrees with the database (missing after a Redis restart, or different), and
//!   `duovarsity analytics rebuild` rebuilds on demand.
//! - Rebuilds and increments of this process are serialised, so an increment is never
//!   lost between a rebuild's read of the database and its swap of the set.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use duovarsity_common::Error;
use duovarsity_common::db::Database;
use duovarsity_common::pubsub::RedisLink;
use duovarsity_common::time::now_millis;

use crate::store::learners as store;
use crate::xp;

mod upkeep;

/// The scope of the leaderboard of every learner.
pub const GLOBAL: &str = "global";
/// How long a week's set outlives its last change.
const KEY_TTL_SECS: i64 = 15 * 24 * 3600;
/// Neighbours shown on each side of the caller.
const NEIGHBOURS: i64 = 2;

/// A board's read in one round trip (KEYS[1] the set; ARGV: the top's size, the caller,
/// neighbours on each side): the top with scores, the caller's 0-based rank (-1 when not a
/// member), the set's size, and the caller's neighbourhood with scores.
static READ: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
local top = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local rank = redis.call('ZREVRANK', KEYS[1], ARGV[2])
local size = redis.call('ZCARD', KEYS[1])
if not rank then
  return {top, -1, size, {}}
end
local side = tonumber(ARGV[3])
local around = redis.call('ZREVRANGE', KEYS[1], math.max(rank - side, 0), rank + side, 'WITHSCORES')
return {top, rank, size, around}
",
    )
});

/// XP earned by a learner, for one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Increment {
    pub week: String,
    pub scope: String,
    pub learner: String,
    pub xp: i64,
}

/// One learner's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// 1-based; 0 for a hidden learner.
    pub rank: i64,
    pub learner: String,
    pub xp: i64,
}

/// A leaderboard as read for a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Board {
    pub top: Vec<Place>,
    pub me: Option<Place>,
    pub neighbours: Vec<Place>,
    pub learners: i64,
    /// Served from Redis (else the database).
    pub from_redis: bool,
}

#[derive(Clone)]
pub struct Leaderboards {
    db: Database,
    redis: Option<RedisLink>,
    stale: Arc<AtomicBool>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

fn key(week: &str, scope: &str) -> String {
    format!("duovarsity:leaderboard:{week}:{scope}")
}

/// The weeks kept in Redis: the current one and the one before.
fn live_weeks() -> [String; 2] {
    let current = xp::week_of(now_millis());
    [xp::previous_week(&current), current]
}

fn places(members: Vec<(String, f64)>, first_rank: i64) -> Vec<Place> {
    members
        .into_iter()
        .zip(first_rank..)
        .map(|((learner, score), rank)| Place {
            rank,
            learner,
            xp: score as i64,
        })
        .collect()
}

impl Leaderboards {
    /// Sets in `redis` when there is one; a new process starts stale until its check.
    pub fn new(db: Database, redis: Option<RedisLink>) -> Self {
        // Every series from the start, at zero, so rates and alerts see them before the
        // first outage.
        for source in ["redis", "database"] {
            metrics::counter!("leaderboard_reads_total", "source" => source).increment(0);
        }
        metrics::counter!("leaderboard_rebuilds_total").increment(0);
        metrics::counter!("leaderboard_stale_total").increment(0);
        Self {
            db,
            stale: Arc::new(AtomicBool::new(redis.is_some())),
            redis,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Whether reads are served from Redis now.
    pub fn serving_from_redis(&self) -> bool {
        self.redis.is_some() && !self.stale.load(Ordering::SeqCst)
    }

    fn mark_stale(&self) {
        if !self.stale.swap(true, Ordering::SeqCst) {
            metrics::counter!("leaderboard_stale_total").increment(1);
        }
    }

    /// Adds committed XP to the live weeks' sets (after the database has it). Learners
    /// hidden by now are left out (a preference change and an addition of this process
    /// never interleave).
    pub async fn add(&self, increments: Vec<Increment>) {
        let Some(redis) = &self.redis else { return };
        let live = live_weeks();
        let mut increments: Vec<Increment> = increments
            .into_iter()
            .filter(|i| live.contains(&i.week))
            .collect();
        if increments.is_empty() {
            return;
        }
        let _guard = self.lock.lock().await;
        if self.stale.load(Ordering::SeqCst) {
            return; // the next rebuild reads them from the database
        }
        let learners: BTreeSet<String> = increments.iter().map(|i| i.learner.clone()).collect();
        match store::hidden_among(&self.db, &learners.into_iter().collect::<Vec<_>>()).await {
            Ok(hidden) => increments.retain(|i| !hidden.contains(&i.learner)),
            Err(error) => {
                tracing::warn!(%error, "reading leaderboard visibility failed");
                self.mark_stale();
                return;
            }
        }
        let mut pipe = redis::pipe();
        let mut keys = BTreeSet::new();
        for increment in &increments {
            let key = key(&increment.week, &increment.scope);
            pipe.cmd("ZINCRBY")
                .arg(&key)
                .arg(increment.xp)
                .arg(&increment.learner)
                .ignore();
            keys.insert(key);
        }
        for key in keys {
            pipe.cmd("EXPIRE").arg(key).arg(KEY_TTL_SECS).ignore();
        }
        let mut connection = redis.connection();
        if redis
            .call("leaderboard_add", pipe.query_async::<()>(&mut connection))
            .await
            .is_none()
        {
            self.mark_stale();
        }
    }

    /// The top `limit` of a week's board, and the caller's place with neighbours.
    pub async fn read(
        &self,
        week: &str,
        scope: &str,
        limit: i64,
        me: &str,
    ) -> Result<Board, Error> {
        if self.serving_from_redis() && live_weeks().iter().any(|w| w == week) {
            if let Some(board) = self.read_redis(week, scope, limit, me).await {
                metrics::counter!("leaderboard_reads_total", "source" => "redis").increment(1);
                return Ok(board);
            }
            self.mark_stale();
        }
        metrics::counter!("leaderboard_reads_total", "source" => "database").increment(1);
        self.read_database(week, scope, limit, me).await
    }

    /// One round trip: [`READ`] answers the top, the caller's rank, the board's size and
    /// the caller's neighbours (with the caller) together.
    async fn read_redis(&self, week: &str, scope: &str, limit: i64, me: &str) -> Option<Board> {
        let redis = self.redis.as_ref()?;
        let mut connection = redis.connection();
        let mut read = READ.key(key(week, scope));
        read.arg(limit).arg(me).arg(NEIGHBOURS);
        type Answer = (Vec<(String, f64)>, i64, i64, Vec<(String, f64)>);
        let (top, rank, learners, around): Answer = redis
            .call("leaderboard_read", read.invoke_async(&mut connection))
            .await?;
        let mut board = Board {
            top: places(top, 1),
            me: None,
            neighbours: Vec::new(),
            learners,
            from_redis: true,
        };
        if rank >= 0 {
            let first = (rank - NEIGHBOURS).max(0) + 1;
            board.neighbours = places(around, first);
            board.me = board.neighbours.iter().find(|p| p.learner == me).cloned();
        } else {
            // Not a member: no XP this week, or hidden (then counted for themselves).
            board.me = self.hidden_place(week, scope, me).await.ok()?;
        }
        Some(board)
    }

    /// A caller who is not on the board: their own XP if they have any (rank 0: hidden).
    async fn hidden_place(
        &self,
        week: &str,
        scope: &str,
        me: &str,
    ) -> Result<Option<Place>, Error> {
        Ok(store::weekly_entry(&self.db, week, scope, me)
            .await?
            .map(|xp| Place {
                rank: 0,
                learner: me.to_string(),
                xp,
            }))
    }

    async fn read_database(
        &self,
        week: &str,
        scope: &str,
        limit: i64,
        me: &str,
    ) -> Result<Board, Error> {
        let top = store::weekly_top(&self.db, week, scope, limit).await?;
        let learners = store::weekly_count(&self.db, week, scope).await?;
        let mut board = Board {
            top: top
                .into_iter()
                .zip(1..)
                .map(|((learner, xp), rank)| Place { rank, learner, xp })
                .collect(),
            me: None,
            neighbours: Vec::new(),
            learners,
            from_redis: false,
        };
        let Some((xp, hidden)) = store::weekly_standing(&self.db, week, scope, me).await? else {
            return Ok(board);
        };
        if hidden {
            board.me = Some(Place {
                rank: 0,
                learner: me.to_string(),
                xp,
            });
            return Ok(board);
        }
        let rank = store::weekly_rank(&self.db, week, scope, me, xp).await?;
        let (above, below) =
            store::weekly_neighbours(&self.db, week, scope, me, xp, NEIGHBOURS).await?;
        let first = rank - above.len() as i64;
        let me_place = Place {
            rank,
            learner: me.to_string(),
            xp,
        };
        board.neighbours = above
            .into_iter()
            .chain(std::iter::once((me.to_string(), xp)))
            .chain(below)
            .zip(first..)
            .map(|((learner, xp), rank)| Place { rank, learner, xp })
            .collect();
        board.me = Some(me_place);
        Ok(board)
    }

    /// Sets a learner's preferences and, when their visibility changed, puts them in or out
    /// of the live weeks' sets (serialised with additions); the row after.
    pub async fn set_preferences(
        &self,
        learner: &str,
        hidden: Option<bool>,
        goal: Option<i64>,
    ) -> Result<store::Learner, Error> {
        let _guard = self.lock.lock().await;
        let before = store::learner(&self.db, learner).await?.map(|l| l.hidden);
        let after = store::set_preferences(&self.db, learner, hidden, goal).await?;
        if before.unwrap_or(false) != after.hidden {
            self.restate(learner, after.hidden).await?;
        }
        Ok(after)
    }

    /// Puts a learner in or out of the live weeks' sets (the caller holds the lock).
    async fn restate(&self, learner: &str, hidden: bool) -> Result<(), Error> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        if self.stale.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for week in live_weeks() {
            for (scope, xp) in store::learner_week(&self.db, &week, learner).await? {
                let key = key(&week, &scope);
                if hidden {
                    pipe.cmd("ZREM").arg(&key).arg(learner).ignore();
                } else {
                    pipe.cmd("ZADD").arg(&key).arg(xp).arg(learner).ignore();
                    pipe.cmd("EXPIRE").arg(&key).arg(KEY_TTL_SECS).ignore();
                }
            }
        }
        let mut connection = redis.connection();
        if redis
            .call(
                "leaderboard_restate",
                pipe.query_async::<()>(&mut connection),
            )
            .await
            .is_none()
        {
            self.mark_stale();
        }
        Ok(())
    }
}
