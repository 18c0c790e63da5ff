//! A wrapper for values that must never reach a log line: `Debug` and `Display` print `***`.
//! Read the value with [`Secret::expose`] at the one place that needs it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret<String> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        lenient_string(deserializer).map(Secret)
    }
}

// Serialised only so that figment can layer defaults; nothing logs a serialised Config.
impl<T: Serialize> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// A string setting whose environment value happens to look like a number or a boolean
/// (a numeric password, say) is still a string.
pub fn lenient_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StringLike {
        Text(String),
        Signed(i64),
        Unsigned(u64),
        Float(f64),
        Flag(bool),
    }
    Ok(match StringLike::deserialize(deserializer)? {
        StringLike::Text(text) => text,
        StringLike::Signed(n) => n.to_string(),
        StringLike::Unsigned(n) => n.to_string(),
        StringLike::Float(n) => n.to_string(),
        StringLike::Flag(b) => b.to_string(),
    })
}
