//! Each model's request and token limits per minute, respected before sending: a model
//! over its limit is skipped (the next one of the plan answers), never sent a request
//! that its provider would refuse. Counted with the same GCRA as the gateway's rate limits
//! ([`duovarsity_common::gcra`]): an idle model may take its whole minute at once, then
//! one request (and its tokens) as each emission interval passes, instead of a window
//! that resets on the minute. The counts are per replica: with N replicas, give each
//! model's limits divided by N in the catalog, or accept N times the burst.

use std::time::Duration;

use duovarsity_common::gcra::{Local, Rate};

/// Models a replica keeps counts for at most.
const MODELS: u64 = 10_000;

pub struct Limits {
    requests: Local,
    tokens: Local,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests: Local::new(MODELS),
            tokens: Local::new(MODELS),
        }
    }
}

fn per_minute(count: u32) -> Option<Rate> {
    (count > 0).then(|| Rate {
        count: u64::from(count),
        period: Duration::from_secs(60),
    })
}

impl Limits {
    /// Takes one request of `tokens` (worst case) from `model`'s limits, if both have room;
    /// otherwise takes nothing. A limit of 0 admits nothing.
    pub async fn take(&self, model: &str, rpm: u32, tpm: u32, tokens: u32) -> bool {
        let (Some(requests), Some(token_rate)) = (per_minute(rpm), per_minute(tpm)) else {
            return false;
        };
        if !self.requests.decide(model, requests).await.allowed {
            return false;
        }
        let cost = u64::from(tokens.max(1));
        if self.tokens.decide_n(model, token_rate, cost).await.allowed {
            return true;
        }
        self.requests.give_back(model, requests, 1).await;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_model_takes_requests_while_both_limits_have_room() {
        let limits = Limits::default();
        assert!(limits.take("m", 2, 1_000, 400).await);
        assert!(limits.take("m", 2, 1_000, 400).await);
        assert!(
            !limits.take("m", 2, 1_000, 10).await,
            "two requests a minute"
        );
        assert!(limits.take("other", 10, 1_000, 900).await);
        assert!(
            !limits.take("other", 10, 1_000, 200).await,
            "1,100 tokens > 1,000"
        );
        // The refused request did not use up a request of the minute.
        for _ in 0..8 {
            assert!(limits.take("other", 10, 100_000, 1).await);
        }
        assert!(!limits.take("zero", 0, 1_000, 1).await);
    }
}
