//! Each model's request and token limits per minute, respected before sending: a model
//! over its limit is skipped (the next one of the plan answers), never sent a request
//! that its provider would refuse. The windows are per replica: with N replicas, give
//! each model's limits divided by N in the catalog, or accept N times the burst.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
struct Window {
    minute: u64,
    requests: u32,
    tokens: u32,
}

#[derive(Default)]
pub struct Limits {
    windows: Mutex<HashMap<String, Window>>,
}

fn this_minute() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

impl Limits {
    /// Takes one request of `tokens` (worst case) from `model`'s minute, if it fits.
    pub fn take(&self, model: &str, rpm: u32, tpm: u32, tokens: u32) -> bool {
        let minute = this_minute();
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = windows.entry(model.to_string()).or_default();
        if window.minute != minute {
            *window = Window {
                minute,
                ..Window::default()
            };
        }
        if window.requests >= rpm || window.tokens.saturating_add(tokens) > tpm {
            return false;
        }
        window.requests += 1;
        window.tokens = window.tokens.saturating_add(tokens);
        true
    }
}
