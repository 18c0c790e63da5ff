//! Where settings come from and how their values are read: the `DUOVARSITY_*` variables as
//! a figment provider whose errors name the variable, and the lenient readers that keep a
//! numeric-looking password a string.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// Flat keys starting with this are rate-limit overrides (`rate_limit_anonymous`).
const RATE_LIMIT_PREFIX: &str = "rate_limit_";

use duovarsity_common::secret::lenient_string;

use super::services::{SERVICE_URL_SUFFIX, service_url_key};
use super::{CONFIG_FILE_VAR, ConfigError, ENV_PREFIX, TEST_ENV_PREFIX, env_var_name};

/// `DUOVARSITY_*` variables as a figment provider whose errors name the variable.
pub(super) struct EnvVars {
    dict: Dict,
}

impl EnvVars {
    pub(super) fn from_map(env: &BTreeMap<String, String>) -> Self {
        let mut dict = Dict::new();
        let mut service_urls = Dict::new();
        let mut rate_limits = Dict::new();
        for (name, value) in env.iter().filter(|(name, _)| {
            name.starts_with(ENV_PREFIX)
                && !name.starts_with(TEST_ENV_PREFIX)
                && name.as_str() != CONFIG_FILE_VAR
        }) {
            let key = name[ENV_PREFIX.len()..].to_lowercase();
            // `DUOVARSITY_<NAME>_SERVICE_URL` fills the `service_urls` map by service name.
            if let Some(service) = key.strip_suffix(SERVICE_URL_SUFFIX) {
                service_urls.insert(service.to_string(), Value::from(value.as_str()));
                continue;
            }
            // `DUOVARSITY_RATE_LIMIT_<CLASS>` fills the `rate_limit` map by class.
            if let Some(class) = key.strip_prefix(RATE_LIMIT_PREFIX) {
                rate_limits.insert(class.to_string(), Value::from(value.as_str()));
                continue;
            }
            // Values are parsed the way figment parses its own env provider: numbers and
            // booleans become typed, anything else stays a string.
            let value: Value = value
                .parse()
                .unwrap_or_else(|_| Value::from(value.as_str()));
            dict.insert(key, value);
        }
        if !service_urls.is_empty() {
            dict.insert("service_urls".to_string(), Value::from(service_urls));
        }
        if !rate_limits.is_empty() {
            dict.insert("rate_limit".to_string(), Value::from(rate_limits));
        }
        Self { dict }
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_profile, keys| match keys {
            [map, service] if *map == "service_urls" => env_var_name(&service_url_key(service)),
            [map, class] if *map == "rate_limit" => {
                env_var_name(&format!("{RATE_LIMIT_PREFIX}{class}"))
            }
            keys => env_var_name(&keys.join("_")),
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

pub(super) fn describe_figment_error(error: figment::Error) -> ConfigError {
    let source_name = match (&error.metadata, error.path.is_empty()) {
        (Some(metadata), false) => {
            let path: Vec<String> = error
                .path
                .iter()
                .filter(|segment| segment.as_str() != "default")
                .cloned()
                .collect();
            if metadata.name == "environment variable" {
                metadata.interpolate(&Profile::Default, &path)
            } else {
                format!("{} ({})", path.join("."), metadata.name)
            }
        }
        _ => match &error.kind {
            figment::error::Kind::UnknownField(field, _) => env_var_name(field),
            _ => "configuration".to_string(),
        },
    };
    let message = match &error.kind {
        figment::error::Kind::UnknownField(field, _) => {
            format!("unknown setting {field:?}")
        }
        kind => kind.to_string(),
    };
    ConfigError {
        source_name,
        message,
    }
}

pub(super) fn optional_lenient_string<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "lenient_string")] String);
    Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(text)| text))
}

/// Service name to URLs, each value a string even where it looks like a number.
pub(super) fn service_url_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "lenient_string")] String);
    Ok(BTreeMap::<String, Wrapped>::deserialize(deserializer)?
        .into_iter()
        .map(|(name, Wrapped(urls))| (name, urls))
        .collect())
}

/// Accepts `"a, b"` (as an environment variable gives it) or a TOML list.
pub(super) fn comma_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Items {
        One(String),
        Many(Vec<String>),
    }
    let items = match Items::deserialize(deserializer)? {
        Items::One(text) => text.split(',').map(str::to_string).collect(),
        Items::Many(items) => items,
    };
    Ok(items
        .into_iter()
        .map(|item| item.trim().to_string())
        .filter(|item| !item.is_empty())
        .collect())
}
