//! Exponential backoff with jitter and a cap: the one way every retry loop of the platform
//! (outbox relays, consumers, mailers, reconnects, usage writers) waits between attempts.
//! Each pause is half of the current step plus a random part of the other half, so replicas
//! that failed together do not retry together; the step doubles up to the cap and starts
//! over after a success.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// The pauses of one retry loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    cap: Duration,
    step: Duration,
}

impl Backoff {
    /// Pauses from about `first` doubling up to `cap`.
    pub fn new(first: Duration, cap: Duration) -> Self {
        let first = first.min(cap);
        Self {
            first,
            cap,
            step: first,
        }
    }

    /// The next pause (between half of the current step and all of it); the step then
    /// doubles, up to the cap.
    pub fn next_pause(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(self.cap);
        let half = step / 2;
        let spread = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if spread == 0 {
            0
        } else {
            random() % (spread + 1)
        };
        half + Duration::from_nanos(jitter)
    }

    /// Sleeps the next pause.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_pause()).await;
    }

    /// After a success: the next failure waits about `first` again.
    pub fn reset(&mut self) {
        self.step = self.first;
    }
}

/// A random number from the standard library's per-process random hash keys.
fn random() -> u64 {
    RandomState::new().build_hasher().finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap_with_jitter_and_start_over_after_a_success() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let steps = [100, 200, 400, 800, 800, 800];
        for step in steps {
            let pause = backoff.next_pause();
            let step = Duration::from_millis(step);
            assert!(
                pause >= step / 2 && pause <= step,
                "{pause:?} for a step of {step:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_pause() <= Duration::from_millis(100));
    }

    #[test]
    fn replicas_that_failed_together_do_not_all_wait_alike() {
        let pauses: std::collections::HashSet<Duration> = (0..20)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(5)).next_pause())
            .collect();
        assert!(pauses.len() > 1, "{pauses:?}");
    }
}
