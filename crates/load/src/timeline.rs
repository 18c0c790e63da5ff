//! Requests per second of a run and their latency, for the report's timeline.

use std::sync::Mutex;

/// Requests per second of the run, as they completed.
#[derive(Debug, Default)]
pub struct Timeline {
    seconds: Mutex<Vec<Second>>,
}

#[derive(Debug, Default, Clone)]
struct Second {
    ok: u64,
    failed: u64,
    latencies_ms: Vec<u32>,
}

impl Timeline {
    /// One request that completed `elapsed_ms` into the run.
    pub fn record(&self, elapsed_ms: u64, response_ms: u64, success: bool) {
        let second = ((elapsed_ms + response_ms) / 1000) as usize;
        let mut seconds = self.seconds.lock().expect("timeline");
        if seconds.len() <= second {
            seconds.resize(second + 1, Second::default());
        }
        let slot = &mut seconds[second];
        if success {
            slot.ok += 1;
        } else {
            slot.failed += 1;
        }
        slot.latencies_ms
            .push(u32::try_from(response_ms).unwrap_or(u32::MAX));
    }

    /// (ok, failed, p50 ms, p99 ms) per second.
    pub(crate) fn series(&self) -> Vec<(u64, u64, f64, f64)> {
        let seconds = self.seconds.lock().expect("timeline");
        seconds
            .iter()
            .map(|s| {
                let mut sorted = s.latencies_ms.clone();
                sorted.sort_unstable();
                let at = |p: f64| {
                    if sorted.is_empty() {
                        0.0
                    } else {
                        f64::from(sorted[((sorted.len() - 1) as f64 * p).round() as usize])
                    }
                };
                (s.ok, s.failed, at(0.50), at(0.99))
            })
            .collect()
    }
}
