//! Targeting rules: the subset of JsonLogic that flagd flag definitions use, compiled once
//! when a definition is loaded into a tree that evaluates without allocating.
//!
//! Supported, anything else is refused with the reason:
//! - `{"if": [cond, outcome, cond, outcome, ..., else?]}`: the first condition that holds
//!   picks its outcome; without an else, the default variant;
//! - an outcome: a variant name, `null` (the default variant), a nested `if`, or
//!   `{"fractional": [[variant, weight], ...]}`: a stable bucket of the user
//!   (MurmurHash3 of the flag key and the user id, as flagd computes it), so a learner in
//!   the first 10 % stays in as the share grows to 20 %;
//! - conditions: `==`, `!=`, `in` (a value in a list, or a substring of a string),
//!   `and`, `or`, `!`, `true`/`false`, over `{"var": name}` for `targetingKey` or
//!   `userId`, `tier`, `role` and `courseId`.

use std::io::Read as _;

use serde_json::Value;

use super::FlagContext;

/// An attribute of the evaluation context a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    UserId,
    Tier,
    Role,
    CourseId,
}

impl Attribute {
    fn parse(name: &str) -> Result<Self, String> {
        match name {
            "targetingKey" | "userId" => Ok(Self::UserId),
            "tier" => Ok(Self::Tier),
            "role" => Ok(Self::Role),
            "courseId" => Ok(Self::CourseId),
            other => Err(format!(
                "unknown attribute {other:?} (known: targetingKey, userId, tier, role, courseId)"
            )),
        }
    }

    fn of<'a>(self, context: &FlagContext<'a>) -> Option<&'a str> {
        match self {
            Self::UserId => context.user_id,
            Self::Tier => context.tier,
            Self::Role => context.role,
            Self::CourseId => context.course_id,
        }
    }
}

/// A condition of an `if`.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Constant(bool),
    Equals(Attribute, String),
    NotEquals(Attribute, String),
    /// The attribute is one of the values.
    OneOf(Attribute, Vec<String>),
    /// The attribute contains the text.
    Contains(Attribute, String),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
}

/// What a rule answers: a variant (by its index in the flag's variants), the default
/// variant, a weighted split, or the outcome of a nested rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Variant(usize),
    Default,
    /// Variant indices with their weights, in the order written (the order fixes who is in
    /// which bucket), and the sum of the weights.
    Fractional(Vec<(usize, u32)>, u32),
    Rule(Box<Rule>),
}

/// An `if` chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub branches: Vec<(Condition, Outcome)>,
    pub otherwise: Outcome,
}

/// Why an evaluation chose its variant (OpenFeature's reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The flag has no targeting: its default variant.
    Static,
    /// Targeting ran and picked a variant (or fell through to the default).
    TargetingMatch,
    /// A weighted split picked the variant.
    Split,
    /// The flag is DISABLED.
    Disabled,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Static => "STATIC",
            Self::TargetingMatch => "TARGETING_MATCH",
            Self::Split => "SPLIT",
            Self::Disabled => "DISABLED",
        }
    }
}

/// Compiles a flag's `targeting` object; `variant` resolves a variant name to its index
/// (or says why it cannot).
pub fn compile(
    targeting: &Value,
    variant: &dyn Fn(&str) -> Result<usize, String>,
) -> Result<Outcome, String> {
    outcome(targeting, variant)
}

fn outcome(
    value: &Value,
    variant: &dyn Fn(&str) -> Result<usize, String>,
) -> Result<Outcome, String> {
    match value {
        Value::Null => Ok(Outcome::Default),
        Value::String(name) => variant(name).map(Outcome::Variant),
        Value::Object(object) if object.len() == 1 => {
            let (operator, arguments) = object.iter().next().expect("one entry");
            match operator.as_str() {
                "if" => rule(arguments, variant).map(|rule| Outcome::Rule(Box::new(rule))),
                "fractional" => fractional(arguments, variant),
                other => Err(format!(
                    "{other:?} does not name a variant; an outcome is a variant name, null, \"if\" or \"fractional\""
                )),
            }
        }
        other => Err(format!(
            "an outcome is a variant name, null, \"if\" or \"fractional\", not {other}"
        )),
    }
}

fn rule(
    arguments: &Value,
    variant: &dyn Fn(&str) -> Result<usize, String>,
) -> Result<Rule, String> {
    let Value::Array(items) = arguments else {
        return Err("\"if\" takes a list: [condition, outcome, ..., else]".into());
    };
    if items.len() < 2 {
        return Err("\"if\" needs at least a condition and an outcome".into());
    }
    let mut branches = Vec::with_capacity(items.len() / 2);
    let mut pairs = items.chunks_exact(2);
    for pair in &mut pairs {
        branches.push((condition(&pair[0])?, outcome(&pair[1], variant)?));
    }
    let otherwise = match pairs.remainder() {
        [last] => outcome(last, variant)?,
        _ => Outcome::Default,
    };
    Ok(Rule {
        branches,
        otherwise,
    })
}

fn fractional(
    arguments: &Value,
    variant: &dyn Fn(&str) -> Result<usize, String>,
) -> Result<Outcome, String> {
    let Value::Array(items) = arguments else {
        return Err("\"fractional\" takes a list of [variant, weight] pairs".into());
    };
    let mut buckets = Vec::with_capacity(items.len());
    let mut total: u32 = 0;
    for item in items {
        let pair = item.as_array().filter(|pair| pair.len() == 2);
        let Some(pair) = pair else {
            return Err(format!(
                "\"fractional\" takes [variant, weight] pairs (a custom bucketing key is not supported), not {item}"
            ));
        };
        let name = pair[0]
            .as_str()
            .ok_or_else(|| format!("a fractional bucket names a variant, not {}", pair[0]))?;
        // Whole numbers, also when written as 10.0 (protobuf's Struct carries every
        // number as a double, so a definition read back through the API looks so).
        let weight = pair[1]
            .as_f64()
            .filter(|w| w.fract() == 0.0 && (0.0..=100_000.0).contains(w))
            .map(|w| w as u32)
            .ok_or_else(|| {
                format!(
                    "the weight of {name:?} is a whole number from 0 to 100000, not {}",
                    pair[1]
                )
            })?;
        total += weight;
        buckets.push((variant(name)?, weight));
    }
    if total == 0 {
        return Err("\"fractional\" needs at least one bucket with a weight above 0".into());
    }
    Ok(Outcome::Fractional(buckets, total))
}

fn attribute(value: &Value) -> Result<Attribute, String> {
    match value.as_object().and_then(|o| o.get("var")) {
        Some(Value::String(name)) => Attribute::parse(name),
        Some(Value::Array(list)) if list.len() == 1 && list[0].is_string() => {
            Attribute::parse(list[0].as_str().expect("a string"))
        }
        _ => Err(format!(
            "a comparison reads {{\"var\": attribute}} first, not {value}"
        )),
    }
}

fn literal(value: &Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(flag) => Ok(flag.to_string()),
        other => Err(format!("a comparison's value is a string, not {other}")),
    }
}

fn two(arguments: &Value, operator: &str) -> Result<(Attribute, Value), String> {
    match arguments.as_array().map(Vec::as_slice) {
        Some([left, right]) => Ok((attribute(left)?, right.clone())),
        _ => Err(format!(
            "{operator:?} takes two arguments: [{{\"var\": ...}}, value]"
        )),
    }
}

fn conditions(arguments: &Value, operator: &str) -> Result<Vec<Condition>, String> {
    match arguments {
        Value::Array(items) if !items.is_empty() => items.iter().map(condition).collect(),
        _ => Err(format!("{operator:?} takes a non-empty list of conditions")),
    }
}

fn condition(value: &Value) -> Result<Condition, String> {
    let object = match value {
        Value::Bool(constant) => return Ok(Condition::Constant(*constant)),
        Value::Object(object) if object.len() == 1 => object,
        other => {
            return Err(format!(
                "a condition is an operation such as {{\"==\": [...]}}, not {other}"
            ));
        }
    };
    let (operator, arguments) = object.iter().next().expect("one entry");
    match operator.as_str() {
        "==" | "===" => {
            let (attribute, value) = two(arguments, operator)?;
            Ok(Condition::Equals(attribute, literal(&value)?))
        }
        "!=" | "!==" => {
            let (attribute, value) = two(arguments, operator)?;
            Ok(Condition::NotEquals(attribute, literal(&value)?))
        }
        "in" => {
            let (attribute, value) = two(arguments, operator)?;
            match value {
                Value::Array(items) => Ok(Condition::OneOf(
                    attribute,
                    items.iter().map(literal).collect::<Result<_, _>>()?,
                )),
                Value::String(text) => Ok(Condition::Contains(attribute, text)),
                other => Err(format!("\"in\" looks in a list or a string, not {other}")),
            }
        }
        "and" => conditions(arguments, operator).map(Condition::All),
        "or" => conditions(arguments, operator).map(Condition::Any),
        "!" => {
            let inner = match arguments {
                Value::Array(items) if items.len() == 1 => &items[0],
                other => other,
            };
            Ok(Condition::Not(Box::new(condition(inner)?)))
        }
        other => Err(format!(
            "unsupported operation {other:?} (supported: ==, !=, in, and, or, !)"
        )),
    }
}

impl Condition {
    fn holds(&self, context: &FlagContext<'_>) -> bool {
        match self {
            Self::Constant(constant) => *constant,
            Self::Equals(attribute, value) => attribute.of(context) == Some(value.as_str()),
            Self::NotEquals(attribute, value) => attribute.of(context) != Some(value.as_str()),
            Self::OneOf(attribute, values) => attribute
                .of(context)
                .is_some_and(|actual| values.iter().any(|v| v == actual)),
            Self::Contains(attribute, text) => attribute
                .of(context)
                .is_some_and(|actual| actual.contains(text.as_str())),
            Self::All(all) => all.iter().all(|c| c.holds(context)),
            Self::Any(any) => any.iter().any(|c| c.holds(context)),
            Self::Not(inner) => !inner.holds(context),
        }
    }
}

/// A chosen variant: its index, or `None` for the default variant.
pub type Choice = (Option<usize>, Reason);

impl Outcome {
    pub fn choose(&self, flag_key: &str, context: &FlagContext<'_>) -> Choice {
        match self {
            Self::Variant(index) => (Some(*index), Reason::TargetingMatch),
            Self::Default => (None, Reason::TargetingMatch),
            Self::Fractional(buckets, total) => (
                Some(split(buckets, *total, flag_key, context.user_id)),
                Reason::Split,
            ),
            Self::Rule(rule) => {
                for (condition, outcome) in &rule.branches {
                    if condition.holds(context) {
                        return outcome.choose(flag_key, context);
                    }
                }
                rule.otherwise.choose(flag_key, context)
            }
        }
    }
}

/// The bucket of `user_id` in a split: MurmurHash3 (x86, 32 bits) of the flag key followed
/// by the user id, scaled onto the weights in their order, so that growing the first
/// bucket only ever moves learners into it. Without a user, the first bucket.
fn split(buckets: &[(usize, u32)], total: u32, flag_key: &str, user_id: Option<&str>) -> usize {
    let Some(user_id) = user_id else {
        return buckets[0].0;
    };
    let mut key = flag_key.as_bytes().chain(user_id.as_bytes());
    let hash = murmur3::murmur3_32(&mut key, 0).unwrap_or(0);
    let point = (u64::from(hash) * u64::from(total)) >> 32;
    let mut upper = 0u64;
    for (variant, weight) in buckets {
        upper += u64::from(*weight);
        if point < upper {
            return *variant;
        }
    }
    buckets[buckets.len() - 1].0
}

/// The position of `user_id` on a split of `flag_key`, from 0 to 99.99 (the share of
/// learners placed before them): for tests and operators.
pub fn bucket_percent(flag_key: &str, user_id: &str) -> f64 {
    let mut key = flag_key.as_bytes().chain(user_id.as_bytes());
    let hash = murmur3::murmur3_32(&mut key, 0).unwrap_or(0);
    f64::from(hash) / (f64::from(u32::MAX) + 1.0) * 100.0
}
