//! The model catalog and routing policy, read from TOML and validated as a whole before
//! it is used: every model names a configured provider, prices and limits are sane, every
//! tier a task floor or budget names exists, the default model exists. A catalog that
//! does not validate is refused with the first problem found (the running one is kept by
//! [`crate::reload`]).
//!
//! Money is kept in billionths of a US dollar (nano-USD, integers) once parsed, so that
//! costs add up exactly; prices are written per million tokens.

use std::collections::BTreeMap;

use duovarsity_common::secret::Secret;
use serde::Deserialize;

/// The built-in catalog (every model on the sandbox provider).
pub const BUILT_IN: &str = include_str!("../ai-catalog.toml");

/// The tiers of the user service.
pub const TIERS: [&str; 3] = ["free", "standard", "premium"];

/// The learning tasks.
pub const TASKS: [&str; 4] = ["hint", "explanation", "grading", "chat"];

const NANO_PER_USD: f64 = 1e9;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Sandbox,
    Openai,
    Azure,
    Anthropic,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderFile {
    kind: ProviderKind,
    #[serde(default)]
    base_url: String,
    #[serde(default)]
    api_key_env: Option<String>,
    /// A file holding the key (a mounted Kubernetes secret).
    #[serde(default)]
    api_key_file: Option<std::path::PathBuf>,
    /// Azure OpenAI's `api-version` query parameter.
    #[serde(default)]
    api_version: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    name: String,
    provider: String,
    upstream_model: String,
    input_usd_per_mtok: f64,
    output_usd_per_mtok: f64,
    quality: u32,
    requests_per_minute: u32,
    tokens_per_minute: u32,
    context_window: u32,
    max_output_tokens: u32,
    tiers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    cacheable: bool,
    max_tokens: u32,
    floor: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    default_model: String,
    max_attempts: u32,
    first_token_timeout_ms: u64,
    total_timeout_ms: u64,
    tasks: BTreeMap<String, TaskFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetsFile {
    daily_usd: BTreeMap<String, f64>,
    platform_daily_usd: f64,
    throttle_at: f64,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    pub consecutive_failures: u32,
    pub failure_rate: f64,
    pub window: u32,
    pub open_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    providers: BTreeMap<String, ProviderFile>,
    models: Vec<ModelFile>,
    policy: PolicyFile,
    budgets: BudgetsFile,
    breaker: BreakerSettings,
}

/// A provider, with its key read from the environment.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub api_key: Option<Secret<String>>,
    pub api_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub provider: String,
    pub upstream_model: String,
    /// nano-USD per token.
    pub input_nano_per_token: f64,
    pub output_nano_per_token: f64,
    pub quality: u32,
    pub requests_per_minute: u32,
    pub tokens_per_minute: u32,
    pub context_window: u32,
    pub max_output_tokens: u32,
    pub tiers: Vec<String>,
}

impl ModelSpec {
    /// What `prompt` and `completion` tokens cost, in nano-USD (rounded up).
    pub fn cost(&self, prompt: u32, completion: u32) -> i64 {
        let cost = f64::from(prompt) * self.input_nano_per_token
            + f64::from(completion) * self.output_nano_per_token;
        cost.ceil() as i64
    }

    pub fn allows(&self, tier: &str) -> bool {
        self.tiers.iter().any(|t| t == tier)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskPolicy {
    pub cacheable: bool,
    pub max_tokens: u32,
    pub floor: BTreeMap<String, u32>,
}

#[derive(Debug, Clone)]
pub struct Catalog {
    pub providers: BTreeMap<String, ProviderSpec>,
    pub models: Vec<ModelSpec>,
    pub default_model: String,
    pub max_attempts: u32,
    pub first_token_timeout: std::time::Duration,
    pub total_timeout: std::time::Duration,
    pub tasks: BTreeMap<String, TaskPolicy>,
    /// nano-USD per UTC day, by tier.
    pub daily_budget: BTreeMap<String, i64>,
    pub platform_daily_budget: i64,
    pub throttle_at: f64,
    pub breaker: BreakerSettings,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("AI catalog: {0}")]
pub struct CatalogError(pub String);

fn usd_to_nano(usd: f64) -> i64 {
    (usd * NANO_PER_USD).round() as i64
}

impl Catalog {
    /// Parses and validates `text`; `env` looks up provider keys (`api_key_env`).
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, CatalogError> {
        let file: CatalogFile =
            toml::from_str(text).map_err(|error| CatalogError(error.to_string()))?;
        let fail = |message: String| Err(CatalogError(message));
        let mut providers = BTreeMap::new();
        for (name, provider) in file.providers {
            let needs_url = provider.kind != ProviderKind::Sandbox;
            if needs_url
                && !(provider.base_url.starts_with("http://")
                    || provider.base_url.starts_with("https://"))
            {
                return fail(format!("provider {name}: base_url must be an http(s) URL"));
            }
            if provider.kind == ProviderKind::Azure && provider.api_version.is_none() {
                return fail(format!("provider {name}: azure needs api_version"));
            }
            let api_key = match (&provider.api_key_env, &provider.api_key_file) {
                (Some(_), Some(_)) => {
                    return fail(format!(
                        "provider {name}: api_key_env or api_key_file, not both"
                    ));
                }
                (Some(variable), None) => match env(variable) {
                    Some(key) if !key.is_empty() => Some(Secret::new(key)),
                    _ => return fail(format!("provider {name}: {variable} is not set")),
                },
                (None, Some(path)) => match std::fs::read_to_string(path) {
                    Ok(key) if !key.trim().is_empty() => Some(Secret::new(key.trim().to_string())),
                    Ok(_) => return fail(format!("provider {name}: {} is empty", path.display())),
                    Err(error) => {
                        return fail(format!("provider {name}: {}: {error}", path.display()));
                    }
                },
                (None, None) => None,
            };
            providers.insert(
                name.clone(),
                ProviderSpec {
                    name,
                    kind: provider.kind,
                    base_url: provider.base_url.trim_end_matches('/').to_string(),
                    api_key,
                    api_version: provider.api_version,
                },
            );
        }
        let mut models: Vec<ModelSpec> = Vec::new();
        for model in file.models {
            let name = &model.name;
            if models.iter().any(|m| &m.name == name)
                || TASKS.contains(&name.as_str())
                || ["auto", "default"].contains(&name.as_str())
            {
                return fail(format!(
                    "model {name}: the name is taken (twice, or an alias)"
                ));
            }
            if !providers.contains_key(&model.provider) {
                return fail(format!("model {name}: no provider {:?}", model.provider));
            }
            let price_ok = |p: f64| p.is_finite() && (0.0..=1000.0).contains(&p);
            if !price_ok(model.input_usd_per_mtok) || !price_ok(model.output_usd_per_mtok) {
                return fail(format!(
                    "model {name}: prices must be between 0 and 1000 USD per million tokens"
                ));
            }
            if model.quality > 100 {
                return fail(format!("model {name}: quality is 0 to 100"));
            }
            if model.requests_per_minute == 0 || model.tokens_per_minute == 0 {
                return fail(format!("model {name}: limits must be positive"));
            }
            if model.max_output_tokens == 0 || model.max_output_tokens > model.context_window {
                return fail(format!(
                    "model {name}: max_output_tokens must be within the context window"
                ));
            }
            if model.tiers.is_empty() || model.tiers.iter().any(|t| !TIERS.contains(&t.as_str())) {
                return fail(format!("model {name}: tiers are among {TIERS:?}"));
            }
            models.push(ModelSpec {
                name: model.name.clone(),
                provider: model.provider,
                upstream_model: model.upstream_model,
                // USD per million tokens = 1,000 nano-USD per token.
                input_nano_per_token: model.input_usd_per_mtok * 1000.0,
                output_nano_per_token: model.output_usd_per_mtok * 1000.0,
                quality: model.quality,
                requests_per_minute: model.requests_per_minute,
                tokens_per_minute: model.tokens_per_minute,
                context_window: model.context_window,
                max_output_tokens: model.max_output_tokens,
                tiers: model.tiers,
            });
        }
        if models.is_empty() {
            return fail("no models".into());
        }
        let policy = file.policy;
        if !models.iter().any(|m| m.name == policy.default_model) {
            return fail(format!(
                "policy.default_model {:?} is not a model",
                policy.default_model
            ));
        }
        if !(1..=5).contains(&policy.max_attempts) {
            return fail("policy.max_attempts is 1 to 5".into());
        }
        if policy.first_token_timeout_ms == 0
            || policy.total_timeout_ms < policy.first_token_timeout_ms
        {
            return fail(
                "policy: timeouts must be positive, the total at least the first token's".into(),
            );
        }
        let mut tasks = BTreeMap::new();
        for task in TASKS {
            let Some(spec) = policy.tasks.get(task) else {
                return fail(format!("policy.tasks.{task} is missing"));
            };
            for tier in TIERS {
                if !spec.floor.contains_key(tier) {
                    return fail(format!("policy.tasks.{task}.floor has no {tier}"));
                }
            }
            if spec.max_tokens == 0 {
                return fail(format!("policy.tasks.{task}.max_tokens must be positive"));
            }
            tasks.insert(
                task.to_string(),
                TaskPolicy {
                    cacheable: spec.cacheable,
                    max_tokens: spec.max_tokens,
                    floor: spec.floor.clone(),
                },
            );
        }
        if let Some(unknown) = policy.tasks.keys().find(|t| !TASKS.contains(&t.as_str())) {
            return fail(format!("policy.tasks.{unknown}: tasks are {TASKS:?}"));
        }
        let budgets = file.budgets;
        let mut daily_budget = BTreeMap::new();
        for tier in TIERS {
            match budgets.daily_usd.get(tier) {
                Some(usd) if usd.is_finite() && *usd >= 0.0 => {
                    daily_budget.insert(tier.to_string(), usd_to_nano(*usd));
                }
                _ => {
                    return fail(format!(
                        "budgets.daily_usd.{tier} must be a non-negative amount"
                    ));
                }
            }
        }
        if !(budgets.platform_daily_usd.is_finite() && budgets.platform_daily_usd >= 0.0) {
            return fail("budgets.platform_daily_usd must be a non-negative amount".into());
        }
        if !(0.0..=1.0).contains(&budgets.throttle_at) {
            return fail("budgets.throttle_at is a share between 0 and 1".into());
        }
        let breaker = file.breaker;
        if breaker.consecutive_failures == 0
            || breaker.window == 0
            || !(0.0..=1.0).contains(&breaker.failure_rate)
            || breaker.open_secs == 0
        {
            return fail(
                "breaker: counts and open_secs must be positive, failure_rate a share".into(),
            );
        }
        Ok(Self {
            providers,
            models,
            default_model: policy.default_model,
            max_attempts: policy.max_attempts,
            first_token_timeout: std::time::Duration::from_millis(policy.first_token_timeout_ms),
            total_timeout: std::time::Duration::from_millis(policy.total_timeout_ms),
            tasks,
            daily_budget,
            platform_daily_budget: usd_to_nano(budgets.platform_daily_usd),
            throttle_at: budgets.throttle_at,
            breaker,
        })
    }

    pub fn model(&self, name: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.name == name)
    }
}

#[cfg(test)]
mod tests;
