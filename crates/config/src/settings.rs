//! What the configuration assembles for the subsystems below it: each one's own settings
//! type (database, bus, cache, media), so none of them reads [`Config`].

use std::path::PathBuf;

use crate::Config;

impl Config {
    /// The directory of JWT signing keys.
    pub fn jwt_keys_dir(&self) -> PathBuf {
        self.jwt_keys_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keys"))
    }

    /// The database URL for `service`: the configured one, or its own SQLite file.
    pub fn database_url_for(&self, service: &str) -> String {
        match &self.database_url {
            Some(url) => url.expose().clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join(format!("{service}.db")).display()
            ),
        }
    }

    /// Where `service`'s database is: [`Self::database_url_for`], the replica, the pool size
    /// and whether to migrate at start.
    pub fn database(&self, service: &str) -> duovarsity_common::db::Settings {
        duovarsity_common::db::Settings {
            service: service.to_string(),
            url: self.database_url_for(service),
            replica_url: self
                .database_replica_url
                .as_ref()
                .map(|url| url.expose().clone()),
            max_connections: self.database_max_connections,
            migrate_on_start: self.migrate_on_start,
        }
    }

    /// The media store URL: the configured one, or `file://<data_dir>/media` (absolute).
    pub fn media_url(&self) -> String {
        match &self.media_url {
            Some(url) => url.clone(),
            None => {
                let dir = self.data_dir.join("media");
                let absolute = std::path::absolute(&dir).unwrap_or(dir);
                format!("file://{}", absolute.display())
            }
        }
    }

    /// `media_options` as key/value pairs.
    pub fn media_options(&self) -> Vec<(String, String)> {
        self.media_options
            .as_ref()
            .map(|options| {
                options
                    .expose()
                    .split(',')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Settings of the two-level cache.
    /// The Kafka bus settings, when `kafka_brokers` is set.
    pub fn kafka_settings(&self) -> Option<duovarsity_common::events::kafka::KafkaSettings> {
        let brokers = self.kafka_brokers.as_ref()?;
        let mut settings = duovarsity_common::events::kafka::KafkaSettings::new(brokers.clone());
        settings.partitions = self.kafka_partitions;
        settings.replication = self.kafka_replication;
        settings.prefix = self.kafka_topic_prefix.clone();
        Some(settings)
    }

    /// The embedded bus: 8 partitions per topic, bounded by `bus_max_bytes`.
    pub fn bus_settings(&self) -> duovarsity_common::events::embedded::EmbeddedSettings {
        duovarsity_common::events::embedded::EmbeddedSettings {
            partitions: 8,
            max_bytes: self.bus_max_bytes,
        }
    }

    pub fn cache_settings(&self) -> duovarsity_common::cache::CacheSettings {
        duovarsity_common::cache::CacheSettings {
            redis_url: self.redis_url.as_ref().map(|url| url.expose().clone()),
            l1_ttl: std::time::Duration::from_secs(self.cache_l1_ttl_secs),
            l1_capacity: self.cache_l1_capacity,
            ..Default::default()
        }
    }
}
