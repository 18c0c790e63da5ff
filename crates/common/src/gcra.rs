//! GCRA (the generic cell rate algorithm): limits counted as one number per key, the
//! theoretical arrival time (TAT) of the next request. The gateway's rate limits and the AI
//! router's per-model limits both count with it.
//!
//! A rate of `count` per `period` emits one cell every `T = period / count`; a request of
//! `n` cells is admitted when the TAT it would push to (`n * T` later) stays within
//! `period` of now, so an idle caller may spend the whole `count` at once and then one per
//! `T`. [`Local`] keeps the TATs of this process; the gateway also runs the same arithmetic
//! in a Redis script to share limits between replicas.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `count` requests per `period`; a fresh client may spend all of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub period: Duration,
}

/// Why a rate does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a rate: write <count>/<s|m|h>, for example 50/m")]
pub struct RateError(pub String);

impl std::str::FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Self, RateError> {
        let refuse = || RateError(text.to_string());
        let (count, unit) = text.trim().split_once('/').ok_or_else(refuse)?;
        let count: u64 = count.trim().parse().map_err(|_| refuse())?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(refuse()),
        };
        if count == 0 || count > 1_000_000 {
            return Err(refuse());
        }
        Ok(Self { count, period })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

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

pub fn micros(duration: Duration) -> u64 {
    duration.as_micros() as u64
}

pub fn emission(rate: Rate) -> u64 {
    (micros(rate.period) / rate.count).max(1)
}

/// The decision, given whether the request was admitted and how far the TAT now runs
/// ahead of the clock (after the request if admitted, before it if refused).
pub fn decision(rate: Rate, allowed: bool, ahead: u64) -> Decision {
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
        self.decide_n(key, rate, 1).await
    }

    /// One request that costs `cost` cells (a request of that many tokens, say): admitted
    /// only if all of them fit.
    pub async fn decide_n(&self, key: &str, rate: Rate, cost: u64) -> Decision {
        let tat = self
            .tats
            .get_with_by_ref(key, async { Arc::new(AtomicU64::new(0)) })
            .await;
        let (period, emission) = (micros(rate.period), emission(rate).saturating_mul(cost));
        let now = now_micros();
        let mut current = tat.load(Ordering::Acquire);
        loop {
            let next = current.max(now).saturating_add(emission);
            if next - now > period {
                return decision(rate, false, current.saturating_sub(now));
            }
            match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return decision(rate, true, next - now),
                Err(seen) => current = seen,
            }
        }
    }

    /// Gives back `cost` cells taken by [`Self::decide_n`] for a request that was not sent
    /// after all (another limit refused it).
    pub async fn give_back(&self, key: &str, rate: Rate, cost: u64) {
        if let Some(tat) = self.tats.get(key).await {
            let returned = emission(rate).saturating_mul(cost);
            let _ = tat.fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                Some(current.saturating_sub(returned))
            });
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

    #[tokio::test]
    async fn a_costly_request_takes_its_cost_and_gives_it_back_when_not_sent() {
        let local = Local::new(100);
        let tokens: Rate = "1000/m".parse().unwrap();
        assert!(local.decide_n("model", tokens, 600).await.allowed);
        assert!(
            !local.decide_n("model", tokens, 600).await.allowed,
            "1,200 > 1,000"
        );
        assert!(local.decide_n("model", tokens, 400).await.allowed);
        local.give_back("model", tokens, 400).await;
        assert!(
            local.decide_n("model", tokens, 400).await.allowed,
            "given back"
        );
        assert!(!local.decide_n("model", tokens, 50).await.allowed);
    }
}
