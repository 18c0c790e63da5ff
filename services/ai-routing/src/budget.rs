//! Daily cost budgets that hold across replicas: each learner's by tier, and the whole
//! platform's. A request reserves its worst-case cost on both before the provider is
//! called; the reservation is settled to the actual cost afterwards, or released if the
//! call failed. A reservation that does not fit is refused whole, so the spend never
//! passes either limit, however many requests race on however many replicas.
//!
//! Three stores, one contract:
//! - [`RedisBudgets`] when Redis is configured: one Lua script per operation, atomic in
//!   Redis across any number of replicas;
//! - [`SqlBudgets`] on PostgreSQL without Redis: a conditional update per counter in one
//!   transaction, atomic across replicas that share the database;
//! - [`MemoryBudgets`] in embedded mode (SQLite: one process): counters under a lock,
//!   seeded at start from the day's recorded usage, so a restart keeps what was spent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use duovarsity_common::Error;
use duovarsity_common::db::Database;
use duovarsity_common::pubsub::RedisLink;

use crate::store;

/// The platform-wide counter's scope.
pub const PLATFORM: &str = "platform";

/// The UTC day (days since the epoch) and when it ends.
pub fn today() -> (i64, SystemTime) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let day = (now.as_secs() / 86_400) as i64;
    (
        day,
        UNIX_EPOCH + Duration::from_secs((day as u64 + 1) * 86_400),
    )
}

/// A held reservation: `amount` nano-USD on `user` and the platform, on `day`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub user: String,
    pub day: i64,
    pub amount: i64,
}

/// Which limit a reservation did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exhausted {
    User,
    Platform,
}

#[async_trait]
pub trait Budgets: Send + Sync {
    /// Reserves `amount` against `user_limit` and `platform_limit` (nano-USD per day).
    async fn reserve(
        &self,
        user: &str,
        amount: i64,
        user_limit: i64,
        platform_limit: i64,
    ) -> Result<Result<Reservation, Exhausted>, Error>;

    /// Replaces the reservation by the actual cost (0 releases it).
    async fn settle(&self, reservation: &Reservation, actual: i64) -> Result<(), Error>;

    /// What `user` has spent (and holds reserved) today.
    async fn spent(&self, user: &str) -> Result<i64, Error>;
}

#[derive(Default)]
pub struct MemoryBudgets {
    spent: std::sync::Mutex<std::collections::HashMap<(String, i64), i64>>,
}

impl MemoryBudgets {
    /// Counters holding today's recorded spend of every user and of the platform.
    pub async fn seeded(db: &Database) -> Result<Self, Error> {
        let (day, _) = today();
        let recorded = crate::store::usage::spend_since(db, day * 86_400_000).await?;
        let budgets = Self::default();
        {
            let mut spent = budgets
                .spent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mut platform = 0;
            for (user, cost) in recorded {
                platform += cost;
                spent.insert((user, day), cost);
            }
            spent.insert((PLATFORM.to_string(), day), platform);
        }
        Ok(budgets)
    }
}

#[async_trait]
impl Budgets for MemoryBudgets {
    async fn reserve(
        &self,
        user: &str,
        amount: i64,
        user_limit: i64,
        platform_limit: i64,
    ) -> Result<Result<Reservation, Exhausted>, Error> {
        let (day, _) = today();
        let mut spent = self
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = spent.get(&(user.to_string(), day)).copied().unwrap_or(0);
        let all = spent
            .get(&(PLATFORM.to_string(), day))
            .copied()
            .unwrap_or(0);
        if mine + amount > user_limit {
            return Ok(Err(Exhausted::User));
        }
        if all + amount > platform_limit {
            return Ok(Err(Exhausted::Platform));
        }
        spent.insert((user.to_string(), day), mine + amount);
        spent.insert((PLATFORM.to_string(), day), all + amount);
        // Yesterday's counters are no longer needed.
        spent.retain(|(_, d), _| *d >= day);
        Ok(Ok(Reservation {
            user: user.to_string(),
            day,
            amount,
        }))
    }

    async fn settle(&self, reservation: &Reservation, actual: i64) -> Result<(), Error> {
        let delta = actual - reservation.amount;
        let mut spent = self
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for scope in [reservation.user.as_str(), PLATFORM] {
            if let Some(value) = spent.get_mut(&(scope.to_string(), reservation.day)) {
                *value += delta;
            }
        }
        Ok(())
    }

    async fn spent(&self, user: &str) -> Result<i64, Error> {
        let (day, _) = today();
        let spent = self
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(spent.get(&(user.to_string(), day)).copied().unwrap_or(0))
    }
}

/// Budgets in the database ([`crate::store::budgets`]), for PostgreSQL without Redis.
pub struct SqlBudgets {
    db: Database,
}

impl SqlBudgets {
    pub fn new(db: Database) -> Self {
        Self { db }
    }
}

#[async_trait]
impl Budgets for SqlBudgets {
    async fn reserve(
        &self,
        user: &str,
        amount: i64,
        user_limit: i64,
        platform_limit: i64,
    ) -> Result<Result<Reservation, Exhausted>, Error> {
        let (day, _) = today();
        let scopes = [(user, user_limit), (PLATFORM, platform_limit)];
        Ok(
            match store::budgets::reserve(&self.db, scopes, day, amount).await? {
                Some(0) => Err(Exhausted::User),
                Some(_) => Err(Exhausted::Platform),
                None => Ok(Reservation {
                    user: user.to_string(),
                    day,
                    amount,
                }),
            },
        )
    }

    async fn settle(&self, reservation: &Reservation, actual: i64) -> Result<(), Error> {
        let scopes = [reservation.user.as_str(), PLATFORM];
        store::budgets::adjust(
            &self.db,
            scopes,
            reservation.day,
            actual - reservation.amount,
        )
        .await
    }

    async fn spent(&self, user: &str) -> Result<i64, Error> {
        store::budgets::spent(&self.db, user, today().0).await
    }
}

/// Reserves on both counters or neither: returns {1} or {0, which}.
const RESERVE: &str = r"
local user = tonumber(redis.call('GET', KEYS[1]) or '0')
local platform = tonumber(redis.call('GET', KEYS[2]) or '0')
local amount = tonumber(ARGV[1])
if user + amount > tonumber(ARGV[2]) then return {0, 1} end
if platform + amount > tonumber(ARGV[3]) then return {0, 2} end
redis.call('INCRBY', KEYS[1], amount)
redis.call('INCRBY', KEYS[2], amount)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {1, 0}
";

/// Moves both counters by the settlement's difference.
const SETTLE: &str = r"
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('INCRBY', KEYS[2], ARGV[1])
return 1
";

pub struct RedisBudgets {
    link: RedisLink,
    reserve: redis::Script,
    settle: redis::Script,
}

impl RedisBudgets {
    pub fn new(link: RedisLink) -> Self {
        Self {
            link,
            reserve: redis::Script::new(RESERVE),
            settle: redis::Script::new(SETTLE),
        }
    }

    fn key(scope: &str, day: i64) -> String {
        format!("duovarsity:ai:budget:{day}:{scope}")
    }
}

fn redis_down() -> Error {
    Error::Unavailable {
        message: "budgets cannot be checked right now (Redis); retry shortly".into(),
        retry_after: Some(Duration::from_secs(1)),
    }
}

#[async_trait]
impl Budgets for RedisBudgets {
    async fn reserve(
        &self,
        user: &str,
        amount: i64,
        user_limit: i64,
        platform_limit: i64,
    ) -> Result<Result<Reservation, Exhausted>, Error> {
        let (day, _) = today();
        let mut connection = self.link.connection();
        let mut invocation = self.reserve.prepare_invoke();
        invocation
            .key(Self::key(user, day))
            .key(Self::key(PLATFORM, day))
            .arg(amount)
            .arg(user_limit)
            .arg(platform_limit)
            .arg(2 * 86_400);
        let answer: Vec<i64> = self
            .link
            .call(
                "ai_budget_reserve",
                invocation.invoke_async(&mut connection),
            )
            .await
            .ok_or_else(redis_down)?;
        Ok(match answer.as_slice() {
            [1, ..] => Ok(Reservation {
                user: user.to_string(),
                day,
                amount,
            }),
            [0, 1] => Err(Exhausted::User),
            _ => Err(Exhausted::Platform),
        })
    }

    async fn settle(&self, reservation: &Reservation, actual: i64) -> Result<(), Error> {
        let mut connection = self.link.connection();
        let mut invocation = self.settle.prepare_invoke();
        invocation
            .key(Self::key(&reservation.user, reservation.day))
            .key(Self::key(PLATFORM, reservation.day))
            .arg(actual - reservation.amount);
        self.link
            .call::<i64>("ai_budget_settle", invocation.invoke_async(&mut connection))
            .await
            .ok_or_else(redis_down)?;
        Ok(())
    }

    async fn spent(&self, user: &str) -> Result<i64, Error> {
        let (day, _) = today();
        let mut connection = self.link.connection();
        let spent: Option<i64> = self
            .link
            .call(
                "ai_budget_spent",
                redis::AsyncCommands::get(&mut connection, Self::key(user, day)),
            )
            .await
            .ok_or_else(redis_down)?;
        Ok(spent.unwrap_or(0))
    }
}
