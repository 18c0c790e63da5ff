//! Feature flags, evaluated in process: `flags.enabled("ai-tutor", &context)`.
//!
//! Definitions are flagd's JSON ([`definition`]): variants, a default variant, an on/off
//! state and targeting rules ([`targeting`]) by tier, role, user, course and percentage.
//! The user service owns them (its database, the admin API, the audit trail); every
//! process holds the last set it received in a [`Flags`] handle, which evaluations read
//! without locking or allocating, and [`distribution`] keeps it current through Redis
//! (a message on every change, and the stored document re-read as a safety net). With
//! Redis or the owner down, a process keeps evaluating the last flags it had.
//!
//! A flag nobody has defined answers its built-in default ([`BUILT_IN`]); a DISABLED flag
//! is off (the kill switch): `enabled` answers false and typed reads the built-in default.

pub mod definition;
pub mod distribution;
pub mod openfeature;
pub mod targeting;

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

pub use definition::{Document, Flag, FlagSet, FlagValue};
pub use targeting::Reason;

/// Flags the code asks for, with what they answer while nobody has defined them.
pub const BUILT_IN: &[(&str, bool, &str)] = &[
    (
        "ai-tutor",
        true,
        "the AI tutor answers (POST /v1/ai/chat); off: 403 FEATURE_DISABLED",
    ),
    (
        "live-progress",
        true,
        "progress frames on the live WebSocket (/v1/ws)",
    ),
    (
        "checkout-provider",
        false,
        "string: the payment provider new orders use (razorpay or stripe); unset: DUOVARSITY_PAYMENT_PROVIDER",
    ),
];

/// Who asks and about what: the caller (from their token) and the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlagContext<'a> {
    pub user_id: Option<&'a str>,
    /// `free`, `standard`, `premium`, ...
    pub tier: Option<&'a str>,
    /// `learner`, `instructor`, `admin`.
    pub role: Option<&'a str>,
    pub course_id: Option<&'a str>,
}

impl<'a> FlagContext<'a> {
    /// The context of a caller with these claims.
    pub fn caller(claims: &'a crate::auth::Claims) -> Self {
        Self {
            user_id: Some(claims.sub.as_str()),
            tier: Some(claims.tier.as_str()),
            role: Some(claims.role.as_str()),
            course_id: None,
        }
    }

    pub fn with_course(mut self, course_id: &'a str) -> Self {
        self.course_id = Some(course_id);
        self
    }
}

/// One evaluation: the variant chosen (`None` when the flag is undefined or DISABLED),
/// its value, and why.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub variant: Option<Arc<str>>,
    pub value: Option<FlagValue>,
    pub reason: Reason,
}

/// The process's flags: cheap to clone, shared by every module of the process.
#[derive(Clone, Default)]
pub struct Flags {
    current: Arc<ArcSwap<FlagSet>>,
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.load();
        f.debug_struct("Flags")
            .field("version", &current.version)
            .field("flags", &current.flags.len())
            .finish()
    }
}

impl Flags {
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs `set` unless the one in use is newer; whether it was installed.
    pub fn replace(&self, set: FlagSet) -> bool {
        let set = Arc::new(set);
        let mut installed = false;
        self.current.rcu(|current| {
            if set.version >= current.version {
                installed = true;
                set.clone()
            } else {
                installed = false;
                current.clone()
            }
        });
        if installed {
            metrics::gauge!("flags_version").set(set.version as f64);
        }
        installed
    }

    /// The set in use.
    pub fn snapshot(&self) -> Arc<FlagSet> {
        self.current.load_full()
    }

    /// Evaluates `key` for `context`; `None` when no flag has that key.
    pub fn evaluate(&self, key: &str, context: &FlagContext<'_>) -> Option<Evaluation> {
        let set = self.current.load();
        let flag = set.flags.get(key)?;
        Some(evaluate(flag, context))
    }

    /// Whether a boolean flag is on for `context`: its built-in default while undefined,
    /// false when DISABLED or when it is not a boolean flag.
    pub fn enabled(&self, key: &str, context: &FlagContext<'_>) -> bool {
        match self.evaluate(key, context) {
            Some(Evaluation {
                value: Some(FlagValue::Bool(on)),
                ..
            }) => on,
            Some(_) => false,
            None => built_in(key),
        }
    }

    /// A string flag's value for `context` (`None`: undefined, DISABLED or not a string).
    pub fn string(&self, key: &str, context: &FlagContext<'_>) -> Option<Arc<str>> {
        match self.evaluate(key, context)?.value? {
            FlagValue::String(value) => Some(value),
            _ => None,
        }
    }

    /// A number flag's value for `context`.
    pub fn number(&self, key: &str, context: &FlagContext<'_>) -> Option<f64> {
        match self.evaluate(key, context)?.value? {
            FlagValue::Number(value) => Some(value),
            _ => None,
        }
    }

    /// A JSON flag's value for `context`.
    pub fn json(&self, key: &str, context: &FlagContext<'_>) -> Option<Arc<serde_json::Value>> {
        match self.evaluate(key, context)?.value? {
            FlagValue::Json(value) => Some(value),
            _ => None,
        }
    }
}

/// Counters of evaluations of built-in flags nobody defined (`variant="default"`), made on
/// first use.
static BUILT_IN_COUNTERS: [OnceLock<metrics::Counter>; BUILT_IN.len()] =
    [const { OnceLock::new() }; BUILT_IN.len()];

/// A built-in flag's default (false for a key the code does not know), counted.
fn built_in(key: &str) -> bool {
    let Some(index) = BUILT_IN.iter().position(|(name, ..)| *name == key) else {
        return false;
    };
    BUILT_IN_COUNTERS[index]
        .get_or_init(|| {
            metrics::counter!("flag_evaluations_total", "flag" => BUILT_IN[index].0, "variant" => "default")
        })
        .increment(1);
    BUILT_IN[index].1
}

/// Evaluates one compiled flag (counted in `flag_evaluations_total{flag,variant}`).
pub fn evaluate(flag: &Flag, context: &FlagContext<'_>) -> Evaluation {
    if !flag.enabled {
        metrics_disabled(flag);
        return Evaluation {
            variant: None,
            value: None,
            reason: Reason::Disabled,
        };
    }
    let (chosen, reason) = match &flag.targeting {
        None => (None, Reason::Static),
        Some(targeting) => targeting.choose(&flag.key, context),
    };
    let variant = &flag.variants[chosen.unwrap_or(flag.default_variant)];
    variant.count(&flag.key);
    Evaluation {
        variant: Some(variant.name.clone()),
        value: Some(variant.value.clone()),
        reason,
    }
}

fn metrics_disabled(flag: &Flag) {
    flag.disabled_counter().increment(1);
}

#[cfg(test)]
mod tests;
