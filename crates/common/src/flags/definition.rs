//! Flag definitions in flagd's JSON format (`{"flags": {"key": {...}}}`), checked and
//! compiled into [`Flag`]s. A definition that cannot be compiled is refused with the
//! reason, naming the flag and the part that is wrong.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde::Deserialize;
use serde_json::Value;

use super::targeting::{self, Outcome};

/// The longest flag key, and its alphabet: `[a-z0-9][a-z0-9._-]*`.
pub const MAX_KEY_LEN: usize = 64;
/// The most variants one flag may have.
pub const MAX_VARIANTS: usize = 32;
/// The largest definition of one flag, in bytes of JSON.
pub const MAX_DEFINITION_BYTES: usize = 16 * 1024;

/// A variant's value.
#[derive(Debug, Clone, PartialEq)]
pub enum FlagValue {
    Bool(bool),
    String(Arc<str>),
    Number(f64),
    Json(Arc<Value>),
}

impl FlagValue {
    fn kind(&self) -> &'static str {
        match self {
            Self::Bool(_) => "boolean",
            Self::String(_) => "string",
            Self::Number(_) => "number",
            Self::Json(_) => "object",
        }
    }

    pub fn to_json(&self) -> Value {
        match self {
            Self::Bool(value) => Value::Bool(*value),
            Self::String(value) => Value::String(value.to_string()),
            Self::Number(value) => {
                serde_json::Number::from_f64(*value).map_or(Value::Null, Value::Number)
            }
            Self::Json(value) => (**value).clone(),
        }
    }
}

/// One variant of a flag, with its evaluation counter (made on first use, so that it
/// lands in the metrics recorder the process installed).
#[derive(Debug)]
pub struct Variant {
    pub name: Arc<str>,
    pub value: FlagValue,
    counter: OnceLock<metrics::Counter>,
}

impl Variant {
    pub(super) fn count(&self, flag: &str) {
        self.counter
            .get_or_init(|| {
                metrics::counter!("flag_evaluations_total", "flag" => flag.to_string(), "variant" => self.name.to_string())
            })
            .increment(1);
    }
}

/// A compiled flag.
#[derive(Debug)]
pub struct Flag {
    pub key: Arc<str>,
    pub enabled: bool,
    pub variants: Vec<Variant>,
    pub default_variant: usize,
    pub targeting: Option<Outcome>,
    /// The definition as written (flagd's JSON for this flag), for the admin API.
    pub definition: Value,
    disabled: OnceLock<metrics::Counter>,
}

/// How a flag is written in flagd's format.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Written {
    state: String,
    variants: serde_json::Map<String, Value>,
    default_variant: String,
    #[serde(default)]
    targeting: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    /// flagd's field for the description is metadata; a plain `description` is allowed too.
    #[serde(default)]
    description: Option<String>,
}

/// Whether `key` is a valid flag key.
pub fn check_key(key: &str) -> Result<(), String> {
    let valid = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.as_bytes()[0].is_ascii_alphanumeric()
        && key.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "a flag key is 1 to {MAX_KEY_LEN} lowercase letters, digits, '.', '_' or '-', starting with a letter or digit; {key:?} is not"
        ))
    }
}

impl Flag {
    /// Compiles one flag's definition (flagd's JSON for one flag).
    pub fn compile(key: &str, definition: &Value) -> Result<Self, String> {
        check_key(key)?;
        let size = definition.to_string().len();
        if size > MAX_DEFINITION_BYTES {
            return Err(format!(
                "the definition is {size} bytes; at most {MAX_DEFINITION_BYTES}"
            ));
        }
        let written: Written = serde_json::from_value(definition.clone())
            .map_err(|error| format!("not a flagd flag definition: {error}"))?;
        let _ = (&written.metadata, &written.description);
        let enabled = match written.state.as_str() {
            "ENABLED" => true,
            "DISABLED" => false,
            other => return Err(format!("state is ENABLED or DISABLED, not {other:?}")),
        };
        if written.variants.is_empty() || written.variants.len() > MAX_VARIANTS {
            return Err(format!("a flag has 1 to {MAX_VARIANTS} variants"));
        }
        let mut variants = Vec::with_capacity(written.variants.len());
        for (name, value) in &written.variants {
            let value = match value {
                Value::Bool(b) => FlagValue::Bool(*b),
                Value::String(s) => FlagValue::String(Arc::from(s.as_str())),
                Value::Number(n) => FlagValue::Number(n.as_f64().unwrap_or_default()),
                Value::Object(_) | Value::Array(_) => FlagValue::Json(Arc::new(value.clone())),
                Value::Null => return Err(format!("variant {name:?} has no value (null)")),
            };
            if let Some(first) = variants.first().map(|v: &Variant| v.value.kind())
                && first != value.kind()
            {
                return Err(format!(
                    "every variant has the same type: {name:?} is a {} but the first is a {first}",
                    value.kind()
                ));
            }
            variants.push(Variant {
                name: Arc::from(name.as_str()),
                value,
                counter: OnceLock::new(),
            });
        }
        let index = |name: &str| {
            variants
                .iter()
                .position(|v| &*v.name == name)
                .ok_or_else(|| format!("no variant named {name:?}"))
        };
        let default_variant =
            index(&written.default_variant).map_err(|e| format!("defaultVariant: {e}"))?;
        let targeting = match &written.targeting {
            None => None,
            Some(Value::Object(object)) if object.is_empty() => None,
            Some(targeting) => {
                Some(targeting::compile(targeting, &index).map_err(|e| format!("targeting: {e}"))?)
            }
        };
        Ok(Self {
            key: Arc::from(key),
            enabled,
            variants,
            default_variant,
            targeting,
            definition: definition.clone(),
            disabled: OnceLock::new(),
        })
    }

    /// Counts an evaluation of this flag while it is DISABLED (`variant="disabled"`).
    pub(super) fn disabled_counter(&self) -> &metrics::Counter {
        self.disabled.get_or_init(|| {
            metrics::counter!("flag_evaluations_total", "flag" => self.key.to_string(), "variant" => "disabled")
        })
    }
}

/// Every flag, by key: one snapshot that evaluations read while a newer one is built.
#[derive(Debug, Default)]
pub struct FlagSet {
    pub flags: HashMap<Arc<str>, Flag>,
    /// Orders snapshots: a replica ignores one older than what it has.
    pub version: i64,
}

/// A flagd document with its version, as the owner publishes it.
#[derive(Deserialize, serde::Serialize)]
pub struct Document {
    #[serde(default)]
    pub version: i64,
    pub flags: serde_json::Map<String, Value>,
}

impl FlagSet {
    /// Compiles a flagd document; the first broken flag refuses the whole document.
    pub fn compile(document: &Document) -> Result<Self, String> {
        let mut flags = HashMap::with_capacity(document.flags.len());
        for (key, definition) in &document.flags {
            let flag = Flag::compile(key, definition).map_err(|e| format!("flag {key:?}: {e}"))?;
            flags.insert(flag.key.clone(), flag);
        }
        Ok(Self {
            flags,
            version: document.version,
        })
    }

    /// The document this set was compiled from.
    pub fn document(&self) -> Document {
        let mut keys: Vec<&Arc<str>> = self.flags.keys().collect();
        keys.sort();
        Document {
            version: self.version,
            flags: keys
                .into_iter()
                .map(|key| (key.to_string(), self.flags[key].definition.clone()))
                .collect(),
        }
    }
}
