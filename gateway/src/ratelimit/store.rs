//! Where limits are counted: GCRA ([`duovarsity_common::gcra`]), in memory ([`Local`], one
//! gateway) or in one Redis script ([`Shared`], every gateway at once: the script reads,
//! decides and writes atomically on Redis's clock, so two gateways admit exactly the limit
//! between them). While Redis is unreachable the
//! shared store falls back to a local one that enforces `1/replicas` of each limit.

pub use duovarsity_common::gcra::{Decision, Local};
use duovarsity_common::gcra::{Rate, decision, emission, micros};
use duovarsity_common::pubsub::RedisLink;

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
