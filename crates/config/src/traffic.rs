//! The gateway's traffic settings: rate-limit overrides are `<n>/<s|m|h>` for a known
//! class, trusted proxies are addresses or CIDR blocks, at least one gateway shares the
//! limits, and the listener's timeouts and caps are in range.

use std::time::Duration;

pub use duovarsity_common::gcra::{Rate, RateError};

use super::{Config, ConfigError, within};

/// The classes a `DUOVARSITY_RATE_LIMIT_<CLASS>` override may name (lower-case here).
pub const RATE_CLASSES: &[&str] = &[
    "anonymous",
    "sign_in",
    "webhook",
    "free_reads",
    "free_writes",
    "free_ai",
    "standard_reads",
    "standard_writes",
    "standard_ai",
    "premium_reads",
    "premium_writes",
    "premium_ai",
    "throttled_reads",
    "throttled_writes",
    "throttled_ai",
];

impl Config {
    pub(super) fn validate_traffic(&self) -> Result<(), ConfigError> {
        for (class, rate) in &self.rate_limit {
            let key = format!("rate_limit_{class}");
            if !RATE_CLASSES.contains(&class.as_str()) {
                return Err(ConfigError::setting(
                    &key,
                    format!(
                        "there is no rate-limit class {class:?} (classes: {})",
                        RATE_CLASSES.join(", ")
                    ),
                ));
            }
            rate.parse::<Rate>()
                .map_err(|error| ConfigError::setting(&key, error.to_string()))?;
        }
        for proxy in &self.trusted_proxies {
            if proxy.parse::<ipnet::IpNet>().is_err() && proxy.parse::<std::net::IpAddr>().is_err()
            {
                return Err(ConfigError::setting(
                    "trusted_proxies",
                    format!("{proxy:?} is neither an IP address nor a CIDR block"),
                ));
            }
        }
        within(
            "header_read_timeout_ms",
            self.header_read_timeout_ms,
            100..=300_000,
        )?;
        within(
            "body_read_timeout_ms",
            self.body_read_timeout_ms,
            100..=300_000,
        )?;
        if self.shed_lag_ms > 10_000 {
            return Err(ConfigError::setting(
                "shed_lag_ms",
                "must be at most 10000 (0 turns lag shedding off)",
            ));
        }
        if !(8..=128).contains(&self.rate_limits_ipv6_prefix) {
            return Err(ConfigError::setting(
                "rate_limits_ipv6_prefix",
                "must be a prefix length between 8 and 128",
            ));
        }
        within("max_connections", self.max_connections, 1..=1_000_000)?;
        within("http2_max_streams", self.http2_max_streams, 1..=10_000)?;
        self.route_timeouts()?;
        if self.gateway_replicas == 0 || self.gateway_replicas > 10_000 {
            return Err(ConfigError::setting(
                "gateway_replicas",
                "must be between 1 and 10000",
            ));
        }
        Ok(())
    }

    /// `route_timeouts` parsed: (`package.Service` or `package.Service/Method`, deadline).
    pub fn route_timeouts(&self) -> Result<Vec<(String, Duration)>, ConfigError> {
        self.route_timeouts
            .iter()
            .map(|entry| {
                let refuse = || {
                    ConfigError::setting(
                        "route_timeouts",
                        format!("{entry:?} is not <package.Service>[/<Method>]=<milliseconds>"),
                    )
                };
                let (route, ms) = entry.split_once('=').ok_or_else(refuse)?;
                let ms: u64 = ms.trim().parse().map_err(|_| refuse())?;
                let route = route.trim();
                if ms == 0 || !route.contains('.') || route.starts_with('/') {
                    return Err(refuse());
                }
                Ok((route.to_string(), Duration::from_millis(ms)))
            })
            .collect()
    }

    /// The trusted proxies as networks (validated at start).
    pub fn trusted_proxy_networks(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies
            .iter()
            .filter_map(|proxy| {
                proxy.parse::<ipnet::IpNet>().ok().or_else(|| {
                    proxy
                        .parse::<std::net::IpAddr>()
                        .ok()
                        .map(ipnet::IpNet::from)
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Rate;
    use std::time::Duration;

    #[test]
    fn rates_parse_and_print() {
        let rate: Rate = "50/m".parse().unwrap();
        assert_eq!((rate.count, rate.period), (50, Duration::from_secs(60)));
        assert_eq!(rate.to_string(), "50/m");
        for bad in ["50", "0/m", "x/m", "5/d", "/m", "5/"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }
}
