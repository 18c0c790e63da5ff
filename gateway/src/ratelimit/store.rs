//! Where limits are counted: GCRA (the generic cell rate algorithm) over one number per
//! key, the theoretical arrival time (TAT) of the next request.
//!
//! A rate of `count` per `period` emits one request every `T = period / count`; a request
//! is admitted when the TAT it would push to stays within `period` of now, so an idle
//! caller may spend the whole `count` at once and then one per `T`. The same arithmetic
//! runs in memory ([`Local`], one gateway) and in one Redis script ([`Shared`], every
//! gateway at once: the script reads, decides and writes atomically on Redis's clock, so
//! two gateways admit exactly the limit between them). While Redis is unreachable the
//! shared store falls back to a local one that enforces `1/replicas` of each limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duovarsity_common::pubsub::RedisLink;
use duovarsity_config::Rate;

/// What one request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests the caller may still send right now.
    pub remaining: u64,
    /// Until the allowance is whole again.
    pub reset: Duration,
    /// When refused: until the next request would be admitted.
    pub retry_after: Duration,
}

fn micros(duration: Duration) -> u64 {
    duration.as_micros() as u64
}

fn emission(rate: Rate) -> u64 {
    (micros(rate.period) / rate.count).max(1)
}

/// The decision, given whether the request was admitted and how far the TAT now runs
/// ahead of the clock (after the request if admitted, before it if refused).
fn decision(rate: Rate, allowed: bool, ahead: u64) -> Decision {
    let (period, emission) = (micros(rate.period), emission(rate));
    Decision {
        allowed,
        remaining: period.saturating_sub(ahead) / emission,
        reset: Duration::from_micros(ahead),
        retry_after: if allowed {
            Duration::ZERO
        } else {
            Duration::from_micros((ahead + emission).saturating_sub(period))
        },
    }
}

fn now_micros() -> u64 {
    micros(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// Limits counted in this process.
pub struct Local {
    tats: moka::future::Cache<String, Arc<AtomicU64>>,
}

impl Local {
    /// Keys idle for an hour (the longest period) are forgotten: their allowance is whole.
    pub fn new(capacity: u64) -> Self {
        Self {
            tats: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
        }
    }

    pub async fn decide(&self, key: &str, rate: Rate) -> Decision {
        let tat = self
            .tats
            .get_with_by_ref(key, async { Arc::new(AtomicU64::new(0)) })
            .await;
        let (period, emission) = (micros(rate.period), emission(rate));
        let now = now_micros();
        let mut current = tat.load(Ordering::Acquire);
        loop {
            let next = current.max(now) + emission;
            if next - now > period {
                return decision(rate, false, current.saturating_sub(now));
            }
            match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return decision(rate, true, next - now),
                Err(seen) => current = seen,
            }
        }
    }
}

/// The GCRA step on Redis's clock: ARGV[1] is T and ARGV[2] the period, in microseconds.
/// Answers {admitted (0/1), how far the TAT runs ahead of now}.
const GCRA: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local emission = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next = tat + emission
if next - now > period then
  return {0, tat - now}
end
redis.call('SET', KEYS[1], next, 'PX', math.ceil((next - now) / 1000) + 1)
return {1, next - now}
";

/// Limits shared by every gateway through Redis, with a local share as the fallback.
pub struct Shared {
    link: RedisLink,
    script: redis::Script,
    fallback: Local,
    replicas: u64,
}

impl Shared {
    pub fn new(link: RedisLink, replicas: u32, capacity: u64) -> Self {
        Self {
            link,
            script: redis::Script::new(GCRA),
            fallback: Local::new(capacity),
            replicas: u64::from(replicas.max(1)),
        }
    }

    pub async fn decide(&self, key: &str, rate: Rate) -> Decision {
        let mut connection = self.link.connection();
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("ratelimit:{key}"))
            .arg(emission(rate))
            .arg(micros(rate.period));
        let answer: Option<Vec<u64>> = self
            .link
            .call("rate_limit", invocation.invoke_async(&mut connection))
            .await;
        match answer.as_deref() {
            Some([admitted, ahead]) => decision(rate, *admitted == 1, *ahead),
            _ => {
                metrics::counter!("rate_limit_fallback_total").increment(1);
                let share = Rate {
                    count: rate.count.div_ceil(self.replicas),
                    period: rate.period,
                };
                self.fallback.decide(key, share).await
            }
        }
    }
}

/// The store of a gateway: in memory alone, or shared through Redis.
pub enum Store {
    Local(Local),
    Shared(Shared),
}

impl Store {
    pub async fn decide(&self, key: &str, rate: Rate) -> Decision {
        match self {
            Self::Local(local) => local.decide(key, rate).await,
            Self::Shared(shared) => shared.decide(key, rate).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_idle_caller_spends_the_whole_count_then_waits_one_emission() {
        let local = Local::new(100);
        let rate: Rate = "5/s".parse().unwrap();
        let mut decisions = Vec::new();
        for _ in 0..7 {
            decisions.push(local.decide("k", rate).await);
        }
        assert_eq!(decisions.iter().filter(|d| d.allowed).count(), 5);
        assert_eq!(
            decisions.iter().map(|d| d.remaining).collect::<Vec<_>>()[..5],
            [4, 3, 2, 1, 0]
        );
        let refused = decisions[6];
        assert!(!refused.allowed);
        assert!(
            refused.retry_after <= Duration::from_millis(200),
            "{refused:?}"
        );
        assert!(
            refused.retry_after > Duration::from_millis(150),
            "{refused:?}"
        );
        assert!(refused.reset <= Duration::from_secs(1));
        // Another key has its own allowance.
        assert!(local.decide("other", rate).await.allowed);
    }
}
