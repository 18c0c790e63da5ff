//! The rate-limit policy: what each kind of caller may spend on each class of route.
//!
//! - Anonymous calls are limited per client address (`anonymous`).
//! - Sign-in, registration and token refresh are limited per client address for everyone
//!   (`sign_in`): they are what credential stuffing aims at.
//! - The payment providers' webhooks are limited per source address (`webhook`): generous,
//!   since a provider retries from a few addresses, but a flood of unsigned posts meets
//!   429 before anything reads its body.
//! - Signed-in callers are limited per user, by the tier their token carries, on three
//!   route classes: `reads` (GET/HEAD), `writes` (everything else) and `ai`
//!   (`/v1/ai/`).
//!
//! The policy comes from TOML (the built-in `rate-limits.toml` or
//! `DUOVARSITY_RATE_LIMITS_FILE`) with `DUOVARSITY_RATE_LIMIT_<CLASS>` overrides on top, and
//! is validated as a whole: every tier has every route class.

use std::collections::BTreeMap;

use duovarsity_config::Rate;
use serde::Deserialize;

/// The built-in policy.
pub const BUILT_IN: &str = include_str!("../../rate-limits.toml");

/// Tiers a token may carry.
pub const TIERS: [&str; 4] = ["free", "standard", "premium", "throttled"];

/// The class of a route, for signed-in callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    Reads,
    Writes,
    Ai,
}

impl RouteClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reads => "reads",
            Self::Writes => "writes",
            Self::Ai => "ai",
        }
    }
}

/// One tier's limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierLimits {
    pub reads: Rate,
    pub writes: Rate,
    pub ai: Rate,
}

impl TierLimits {
    pub fn get(&self, class: RouteClass) -> Rate {
        match class {
            RouteClass::Reads => self.reads,
            RouteClass::Writes => self.writes,
            RouteClass::Ai => self.ai,
        }
    }
}

/// The policy in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub anonymous: Rate,
    pub sign_in: Rate,
    pub webhook: Rate,
    pub tiers: BTreeMap<String, TierLimits>,
}

/// Why a policy is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate-limit policy: {0}")]
pub struct PolicyError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    anonymous: String,
    sign_in: String,
    /// Optional, so that policy files written before the class existed still load.
    #[serde(default = "default_webhook")]
    webhook: String,
    tiers: BTreeMap<String, RawTier>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    reads: String,
    writes: String,
    ai: String,
}

fn default_webhook() -> String {
    "600/m".to_string()
}

fn rate(text: &str, place: &str) -> Result<Rate, PolicyError> {
    text.parse()
        .map_err(|error| PolicyError(format!("{place}: {error}")))
}

impl Policy {
    /// Parses `text` and applies `overrides` (class, as in `DUOVARSITY_RATE_LIMIT_<CLASS>`
    /// lower-cased, to rate).
    pub fn parse(text: &str, overrides: &BTreeMap<String, String>) -> Result<Self, PolicyError> {
        let raw: RawPolicy =
            toml::from_str(text).map_err(|error| PolicyError(error.to_string()))?;
        let mut tiers = BTreeMap::new();
        for (name, tier) in &raw.tiers {
            if !TIERS.contains(&name.as_str()) {
                return Err(PolicyError(format!(
                    "unknown tier {name:?} (tiers: {})",
                    TIERS.join(", ")
                )));
            }
            tiers.insert(
                name.clone(),
                TierLimits {
                    reads: rate(&tier.reads, &format!("tiers.{name}.reads"))?,
                    writes: rate(&tier.writes, &format!("tiers.{name}.writes"))?,
                    ai: rate(&tier.ai, &format!("tiers.{name}.ai"))?,
                },
            );
        }
        if let Some(missing) = TIERS.iter().find(|tier| !tiers.contains_key(**tier)) {
            return Err(PolicyError(format!("tier {missing:?} has no limits")));
        }
        let mut policy = Self {
            anonymous: rate(&raw.anonymous, "anonymous")?,
            sign_in: rate(&raw.sign_in, "sign_in")?,
            webhook: rate(&raw.webhook, "webhook")?,
            tiers,
        };
        for (class, text) in overrides {
            let value = rate(
                text,
                &format!("DUOVARSITY_RATE_LIMIT_{}", class.to_uppercase()),
            )?;
            let slot = match class.as_str() {
                "anonymous" => &mut policy.anonymous,
                "sign_in" => &mut policy.sign_in,
                "webhook" => &mut policy.webhook,
                other => {
                    let (tier, route) = other
                        .rsplit_once('_')
                        .ok_or_else(|| PolicyError(format!("unknown class {other:?}")))?;
                    let limits = policy
                        .tiers
                        .get_mut(tier)
                        .ok_or_else(|| PolicyError(format!("unknown class {other:?}")))?;
                    match route {
                        "reads" => &mut limits.reads,
                        "writes" => &mut limits.writes,
                        "ai" => &mut limits.ai,
                        _ => return Err(PolicyError(format!("unknown class {other:?}"))),
                    }
                }
            };
            *slot = value;
        }
        Ok(policy)
    }

    /// The limits of `tier`; a tier this policy does not know is refused by name.
    pub fn tier(&self, tier: &str) -> Option<&TierLimits> {
        self.tiers.get(tier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_policy_is_valid_and_overrides_apply() {
        let policy = Policy::parse(BUILT_IN, &BTreeMap::new()).unwrap();
        assert_eq!(policy.webhook.to_string(), "600/m");
        let without = BUILT_IN.replace("webhook = \"600/m\"", "");
        assert_eq!(
            Policy::parse(&without, &BTreeMap::new()).unwrap().webhook,
            policy.webhook,
            "an older file without the class gets the default"
        );
        assert!(
            policy.tier("premium").unwrap().reads.count > policy.tier("free").unwrap().reads.count
        );
        assert!(policy.tier("throttled").unwrap().ai.count < policy.tier("free").unwrap().ai.count);
        let overrides = BTreeMap::from([
            ("anonymous".to_string(), "50/m".to_string()),
            ("premium_ai".to_string(), "7/h".to_string()),
            ("webhook".to_string(), "5/s".to_string()),
        ]);
        let policy = Policy::parse(BUILT_IN, &overrides).unwrap();
        assert_eq!(policy.anonymous.to_string(), "50/m");
        assert_eq!(policy.tier("premium").unwrap().ai.to_string(), "7/h");
        assert_eq!(policy.webhook.to_string(), "5/s");
    }

    #[test]
    fn bad_policies_are_refused_with_the_place() {
        let missing_tier = BUILT_IN.replace("[tiers.throttled]", "[tiers.gold]");
        assert!(
            Policy::parse(&missing_tier, &BTreeMap::new())
                .unwrap_err()
                .0
                .contains("gold")
        );
        let bad_rate = BUILT_IN.replacen("anonymous = \"", "anonymous = \"x", 1);
        assert!(
            Policy::parse(&bad_rate, &BTreeMap::new())
                .unwrap_err()
                .0
                .contains("anonymous")
        );
        let typo = format!("{BUILT_IN}\n[tiers.free.extra]\n");
        assert!(Policy::parse(&typo, &BTreeMap::new()).is_err());
    }
}
