//! A cap on the calls the gateway starts at once, driven by how far behind the process's
//! async runtime is. A probe task asks to wake every [`PROBE_EVERY`] and measures how late
//! it woke: when every core is busy, each ready task (a refusal among them) waits its
//! turn about that long, so the lag is the CPU's queueing delay, which a fixed in-flight
//! cap cannot see (a cap sized for an LLM that answers in seconds is far too high for a
//! saturated CPU, and one sized for the CPU starves the LLM calls).
//!
//! The cap follows the lag, additive increase and multiplicative decrease: each probe that
//! woke more than the threshold late (`DUOVARSITY_SHED_LAG_MS`) cuts it in proportion to
//! how late (down to [`MIN_CAP`]); each on-time probe while the calls in flight use most of
//! the cap raises it (up to `DUOVARSITY_UPSTREAM_MAX_IN_FLIGHT`). Admission
//! ([`crate::upstream::Upstreams::admit`]) gives each priority its share of the cap, so
//! lower tiers are shed first. The queue, and with it the time to refuse, stays short.
//! `gateway_admission_cap` and `runtime_lag_seconds` publish both.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often the probe asks to wake.
pub const PROBE_EVERY: Duration = Duration::from_millis(5);
/// The smallest cap: enough to keep a core busy while calls wait on I/O.
pub const MIN_CAP: usize = 16;

/// The adaptive cap and the calls it admitted that are still running. The probe stops when
/// the last clone is dropped.
#[derive(Clone)]
pub struct Governor(Arc<State>);

struct State {
    cap: AtomicUsize,
    in_flight: AtomicUsize,
    max: usize,
}

/// One admitted call; dropping it ends the call for the governor.
pub struct Admitted(Arc<State>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Governor {
    /// Starts the probe on the current runtime: the cap starts at `max` and is cut while
    /// the runtime lags more than `threshold`.
    pub fn start(max: usize, threshold: Duration) -> Self {
        let max = max.max(MIN_CAP);
        let state = Arc::new(State {
            cap: AtomicUsize::new(max),
            in_flight: AtomicUsize::new(0),
            max,
        });
        let weak: Weak<State> = Arc::downgrade(&state);
        tokio::spawn(async move {
            loop {
                let due = Instant::now() + PROBE_EVERY;
                tokio::time::sleep_until(due.into()).await;
                let late = Instant::now().saturating_duration_since(due);
                let Some(state) = weak.upgrade() else { return };
                metrics::gauge!("runtime_lag_seconds").set(late.as_secs_f64());
                let cap = state.adjust(late, threshold);
                metrics::gauge!("gateway_admission_cap").set(cap as f64);
            }
        });
        Self(state)
    }

    /// The cap now.
    pub fn cap(&self) -> usize {
        self.0.cap.load(Ordering::Relaxed)
    }

    /// Admits a call when fewer than `share` of the cap are running.
    pub fn admit(&self, share: f64) -> Option<Admitted> {
        let allowed = (self.cap() as f64 * share).ceil() as usize;
        let running = self.0.in_flight.fetch_add(1, Ordering::Relaxed);
        let admitted = Admitted(self.0.clone());
        (running < allowed).then_some(admitted)
    }
}

impl State {
    /// One probe's verdict: a probe `late` by more than `threshold` cuts the cap in
    /// proportion (twice the threshold halves it, at least an eighth goes), since a
    /// runtime that far behind runs the probe, and so this, rarely; an on-time probe while
    /// the cap is mostly used raises it. The new cap.
    fn adjust(&self, late: Duration, threshold: Duration) -> usize {
        let cap = self.cap.load(Ordering::Relaxed);
        let next = if late > threshold {
            let keep = (threshold.as_secs_f64() / late.as_secs_f64()).min(0.875);
            ((cap as f64 * keep) as usize).max(MIN_CAP)
        } else if self.in_flight.load(Ordering::Relaxed) * 4 >= cap * 3 {
            (cap + 1 + cap / 64).min(self.max)
        } else {
            cap
        };
        self.cap.store(next, Ordering::Relaxed);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime held busy cuts the cap; on-time probes with the cap in use raise it again.
    #[tokio::test(flavor = "current_thread")]
    async fn the_cap_falls_while_the_runtime_lags_and_recovers_when_used() {
        // A threshold well above a busy test machine's noise, and stalls well above it.
        let governor = Governor::start(1024, Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(governor.cap(), 1024);
        // Hold the only worker thread in short slices, as a CPU-bound flood would.
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(50));
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let cut = governor.cap();
        assert!(cut < 256, "the cap was cut to {cut}");
        // Lower tiers get a share of it.
        let held: Vec<_> = (0..cut / 2)
            .map(|_| governor.admit(1.0).expect("under the cap"))
            .collect();
        assert!(governor.admit(0.5).is_none());
        assert!(governor.admit(1.0).is_some());
        // Calls using most of the cap on an idle runtime raise it.
        let more: Vec<_> = (0..cut / 2).filter_map(|_| governor.admit(1.0)).collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(governor.cap() > cut, "{} after {cut}", governor.cap());
        drop((held, more));
    }
}
