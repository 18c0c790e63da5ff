//! Where the other services are: `DUOVARSITY_<NAME>_SERVICE_URL` (a fixed list of
//! `http(s)://` URLs, or one discovered source, see [`duovarsity_common::discovery`]), their checks,
//! and the channels services call each other on.

use super::{Config, ConfigError};

impl Config {
    /// The gRPC URLs configured for `service` (a module's configuration name), if any.
    pub fn configured_service_urls(&self, service: &str) -> Option<Vec<String>> {
        self.service_urls
            .get(&service_key(service))
            .map(|urls| split_urls(urls))
    }

    /// Sets `service`'s URL unless one is configured (embedded mode points every service
    /// at its own listener).
    pub fn default_service_url(&mut self, service: &str, url: &str) {
        self.service_urls
            .entry(service_key(service))
            .or_insert_with(|| url.to_string());
    }

    /// Refuses a `DUOVARSITY_<NAME>_SERVICE_URL` whose name is not among `known` (the
    /// module table), so a typo does not leave a service silently unrouted.
    pub fn check_service_names(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self
            .service_urls
            .keys()
            .find(|name| !known.iter().any(|known| service_key(known) == **name))
        {
            Some(unknown) => Err(ConfigError::setting(
                &service_url_key(unknown),
                format!(
                    "there is no service named {unknown:?} (services: {})",
                    known.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// The gRPC URLs of `service`: the configured ones, else `grpc_addr` (where a service
    /// started on this machine with the defaults listens).
    pub fn service_urls(&self, service: &str) -> Vec<String> {
        self.configured_service_urls(service)
            .unwrap_or_else(|| vec![format!("http://{}", self.grpc_addr)])
    }

    /// A channel to `service` (`course`, ...), balanced over the endpoints its URL
    /// names and follows ([`duovarsity_common::discovery`]), each dialed with `configure`.
    pub fn service_channel(
        &self,
        service: &str,
        configure: fn(tonic::transport::Endpoint) -> tonic::transport::Endpoint,
    ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        let urls = self.service_urls(service);
        // Validated at load: a URL list that does not parse is a fixed list.
        let source = duovarsity_common::discovery::Source::parse(&urls)
            .unwrap_or(duovarsity_common::discovery::Source::Static(urls));
        duovarsity_common::discovery::channel(source, self.kubernetes_api_url.as_deref(), configure)
    }

    /// Service names are `a-z0-9_`, and each URL is a fixed `http(s)://` list or one
    /// discovered source.
    pub(super) fn validate_service_urls(&self) -> Result<(), ConfigError> {
        for (service, urls) in &self.service_urls {
            if !service
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(ConfigError::setting(
                    &service_url_key(service),
                    "names a service with characters other than a-z, 0-9 and '_'",
                ));
            }
            let urls = split_urls(urls);
            let fixed = match duovarsity_common::discovery::Source::parse(&urls) {
                Ok(duovarsity_common::discovery::Source::Static(fixed)) => fixed,
                Ok(_) => continue,
                Err(message) => {
                    return Err(ConfigError::setting(&service_url_key(service), &message));
                }
            };
            if fixed.is_empty()
                || fixed
                    .iter()
                    .any(|url| !(url.starts_with("http://") || url.starts_with("https://")))
            {
                return Err(ConfigError::setting(
                    &service_url_key(service),
                    "must be http:// or https:// URLs, separated by commas, or one dns:///HOST:PORT or kubernetes:///SERVICE[.NAMESPACE]:PORT",
                ));
            }
        }
        Ok(())
    }
}

/// `user` -> `user_service_url` (the flat key whose variable is
/// `DUOVARSITY_USER_SERVICE_URL`).
pub(super) fn service_url_key(service: &str) -> String {
    format!("{service}{SERVICE_URL_SUFFIX}")
}

/// A service name as it stands in a variable: `ai-routing` is `ai_routing`.
fn service_key(service: &str) -> String {
    service.replace('-', "_")
}

/// Flat keys ending in this are service URLs (`user_service_url`).
pub(super) const SERVICE_URL_SUFFIX: &str = "_service_url";

fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_string)
        .collect()
}
