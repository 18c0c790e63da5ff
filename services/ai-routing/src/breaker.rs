//! Per-provider circuit breakers. A breaker opens after `consecutive_failures` failures in
//! a row, or when `failure_rate` of its last `window` calls failed; while open, its
//! provider is skipped. After `open_secs` it lets one probe through (half-open): success
//! closes it, failure opens it again. `ai_breaker_state{provider}` is 0 closed, 1
//! half-open, 2 open.
//!
//! A breaker is per replica: each replica learns of an outage from its own calls, which
//! is what it needs to stop sending to it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::catalog::BreakerSettings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// One probe is out.
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    state: State,
    consecutive: u32,
    recent: VecDeque<bool>,
}

#[derive(Default)]
pub struct Breakers {
    breakers: Mutex<HashMap<String, Breaker>>,
}

fn gauge(provider: &str, state: State) {
    let value = match state {
        State::Closed => 0.0,
        State::HalfOpen => 1.0,
        State::Open { .. } => 2.0,
    };
    metrics::gauge!("ai_breaker_state", "provider" => provider.to_string()).set(value);
}

impl Breakers {
    fn with<T>(&self, provider: &str, f: impl FnOnce(&mut Breaker) -> T) -> T {
        let mut breakers = self
            .breakers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let breaker = breakers.entry(provider.to_string()).or_insert(Breaker {
            state: State::Closed,
            consecutive: 0,
            recent: VecDeque::new(),
        });
        f(breaker)
    }

    /// Whether `provider` is worth trying now (a half-open breaker admits one probe).
    pub fn admit(&self, provider: &str) -> bool {
        self.with(provider, |breaker| match breaker.state {
            State::Closed => true,
            State::Open { until } if Instant::now() >= until => {
                breaker.state = State::HalfOpen;
                gauge(provider, breaker.state);
                true
            }
            State::Open { .. } | State::HalfOpen => false,
        })
    }

    /// Whether `provider` is not known to be down (for planning, without taking a probe).
    pub fn healthy(&self, provider: &str) -> bool {
        self.with(provider, |breaker| match breaker.state {
            State::Closed => true,
            State::Open { until } => Instant::now() >= until,
            State::HalfOpen => false,
        })
    }

    pub fn record(&self, provider: &str, ok: bool, settings: &BreakerSettings) {
        self.with(provider, |breaker| {
            breaker.recent.push_back(ok);
            while breaker.recent.len() > settings.window as usize {
                breaker.recent.pop_front();
            }
            breaker.consecutive = if ok { 0 } else { breaker.consecutive + 1 };
            let failures = breaker.recent.iter().filter(|ok| !**ok).count();
            let full = breaker.recent.len() >= settings.window as usize;
            let rate = failures as f64 / breaker.recent.len().max(1) as f64;
            let before = breaker.state;
            breaker.state = if ok && breaker.state == State::HalfOpen {
                breaker.recent.clear();
                State::Closed
            } else if !ok
                && (breaker.state == State::HalfOpen
                    || breaker.consecutive >= settings.consecutive_failures
                    || (full && rate >= settings.failure_rate))
            {
                State::Open {
                    until: Instant::now() + Duration::from_secs(settings.open_secs),
                }
            } else {
                breaker.state
            };
            if std::mem::discriminant(&before) != std::mem::discriminant(&breaker.state) {
                tracing::warn!(provider, state = ?breaker.state, "circuit breaker changed");
            }
            gauge(provider, breaker.state);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: BreakerSettings = BreakerSettings {
        consecutive_failures: 3,
        failure_rate: 0.5,
        window: 10,
        open_secs: 1,
    };

    #[test]
    fn opens_on_failures_probes_after_a_while_and_closes_on_success() {
        let breakers = Breakers::default();
        for _ in 0..3 {
            assert!(breakers.admit("p"));
            breakers.record("p", false, &SETTINGS);
        }
        assert!(!breakers.admit("p"), "open");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(breakers.admit("p"), "one probe");
        assert!(!breakers.admit("p"), "only one");
        breakers.record("p", true, &SETTINGS);
        assert!(breakers.admit("p"), "closed");
    }

    #[test]
    fn a_high_failure_rate_opens_it_too() {
        let breakers = Breakers::default();
        for n in 0..10 {
            breakers.record("p", n % 2 == 0, &SETTINGS);
        }
        assert!(!breakers.admit("p"));
    }
}
