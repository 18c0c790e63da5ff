//! The range and consistency checks of [`Config`] that types alone cannot express; each
//! refusal names the variable (or file key) to fix.

use crate::{Config, ConfigError, within};

impl Config {
    /// Range and consistency checks that types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, url) in [
            ("database_url", &self.database_url),
            ("database_replica_url", &self.database_replica_url),
            ("migrate_database_url", &self.migrate_database_url),
        ] {
            if let Some(url) = url {
                let url = url.expose();
                if !(url.starts_with("sqlite:")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://"))
                {
                    return Err(ConfigError::setting(
                        key,
                        "must start with sqlite:, postgres:// or postgresql://",
                    ));
                }
            }
        }
        if self.database_replica_url.is_some() && self.database_url.is_none() {
            return Err(ConfigError::setting(
                "database_replica_url",
                "needs DUOVARSITY_DATABASE_URL (a replica of which primary?)",
            ));
        }
        if self.database_max_connections == 0 || self.database_max_connections > 1000 {
            return Err(ConfigError::setting(
                "database_max_connections",
                "must be between 1 and 1000",
            ));
        }
        if !(60..=24 * 60 * 60).contains(&self.access_token_ttl_secs) {
            return Err(ConfigError::setting(
                "access_token_ttl_secs",
                "must be between 60 and 86400 seconds",
            ));
        }
        if self.refresh_token_ttl_secs <= self.access_token_ttl_secs {
            return Err(ConfigError::setting(
                "refresh_token_ttl_secs",
                "must be longer than the access token lifetime",
            ));
        }
        if self.bootstrap_admin_email.is_some() != self.bootstrap_admin_password.is_some() {
            return Err(ConfigError::setting(
                "bootstrap_admin_password",
                "DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL and DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD go together",
            ));
        }
        self.validate_service_urls()?;
        if let Some(url) = &self.mail_url
            && !url.starts_with("smtp://")
        {
            return Err(ConfigError::setting(
                "mail_url",
                "must be smtp://host:port (or unset for .eml files)",
            ));
        }
        if let Some(url) = &self.redis_url
            && !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://"))
        {
            return Err(ConfigError::setting(
                "redis_url",
                "must start with redis:// or rediss://",
            ));
        }
        if let Some(url) = &self.media_url
            && !(url.starts_with("file:///") || url.contains("://"))
        {
            return Err(ConfigError::setting(
                "media_url",
                "must be file:///absolute/dir or an object store URL such as s3://bucket",
            ));
        }
        if let Some(options) = &self.media_options
            && options.expose().split(',').any(|pair| !pair.contains('='))
        {
            return Err(ConfigError::setting(
                "media_options",
                "must be comma-separated key=value pairs",
            ));
        }
        within(
            "media_max_bytes",
            self.media_max_bytes,
            1024..=1024 * 1024 * 1024,
        )?;
        within("cache_l1_ttl_secs", self.cache_l1_ttl_secs, 1..=3600)?;
        within("flags_reload_secs", self.flags_reload_secs, 1..=3600)?;
        if let Some(brokers) = &self.kafka_brokers
            && brokers.split(',').any(|broker| {
                broker
                    .trim()
                    .rsplit_once(':')
                    .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            })
        {
            return Err(ConfigError::setting(
                "kafka_brokers",
                "must be host:port pairs, separated by commas",
            ));
        }
        within("live_ping_secs", self.live_ping_secs, 1..=300)?;
        within(
            "live_connections_per_user",
            self.live_connections_per_user,
            1..=1_000_000,
        )?;
        within(
            "announcements_per_hour",
            self.announcements_per_hour,
            1..=1_000_000,
        )?;
        if self.bus_max_bytes < 1 << 20 {
            return Err(ConfigError::setting(
                "bus_max_bytes",
                "must be at least 1048576 (1 MiB)",
            ));
        }
        within("kafka_partitions", self.kafka_partitions, 1..=10_000)?;
        within("kafka_replication", self.kafka_replication, 1..=16)?;
        if !self
            .kafka_topic_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err(ConfigError::setting(
                "kafka_topic_prefix",
                "may hold only letters, digits, '.', '_' and '-'",
            ));
        }
        self.validate_payments()?;
        self.validate_traffic()?;
        if self.cache_l1_capacity == 0 {
            return Err(ConfigError::setting(
                "cache_l1_capacity",
                "must be greater than 0",
            ));
        }
        for origin in &self.cors_allowed_origins {
            if origin != "*" && origin.parse::<http::HeaderValue>().is_err() {
                return Err(ConfigError::setting(
                    "cors_allowed_origins",
                    format!("{origin:?} is not a valid origin"),
                ));
            }
        }
        within(
            "body_limit_bytes",
            self.body_limit_bytes,
            1024..=256 * 1024 * 1024,
        )?;
        within("jwks_refresh_secs", self.jwks_refresh_secs, 1..=86_400)?;
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::setting(
                "request_timeout_ms",
                "must be greater than 0",
            ));
        }
        if self.stream_timeout_ms < self.request_timeout_ms {
            return Err(ConfigError::setting(
                "stream_timeout_ms",
                "must be at least request_timeout_ms",
            ));
        }
        Ok(())
    }
}
