//! Request metrics of one route, with their handles made once: `http_requests_total` and
//! `http_request_duration_seconds`, recorded by the metrics layer
//! ([`crate::layers::metrics`]).

use std::sync::{OnceLock, RwLock};

use http::Method;

/// The most (method, status) counters a route keeps handles for; past that, the registry
/// is asked each time.
const MAX_COUNTERS_PER_ROUTE: usize = 32;

/// A route's metric handles, made on first use: the duration histogram, and a counter per
/// method and status seen. The profile of the cached course page showed the registry's
/// lookups (hashing the label strings made for each request) at 1.5 % of samples.
#[derive(Default)]
pub struct RouteMeters {
    duration: OnceLock<metrics::Histogram>,
    requests: RwLock<Vec<(Method, u16, metrics::Counter)>>,
}

/// A copy of a route starts with no handles.
impl Clone for RouteMeters {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl std::fmt::Debug for RouteMeters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMeters").finish_non_exhaustive()
    }
}

impl RouteMeters {
    pub fn record(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        self.duration
            .get_or_init(|| {
                metrics::histogram!("http_request_duration_seconds", "route" => route.to_string())
            })
            .record(seconds);
        let known = self
            .requests
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(m, s, _)| m == method && *s == status)
            .map(|(_, _, counter)| counter.clone());
        let counter = known.unwrap_or_else(|| {
            let counter = requests_counter(route, method, status);
            let mut requests = self
                .requests
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if requests.len() < MAX_COUNTERS_PER_ROUTE {
                requests.push((method.clone(), status, counter.clone()));
            }
            counter
        });
        counter.increment(1);
    }
}

pub fn requests_counter(route: &str, method: &Method, status: u16) -> metrics::Counter {
    metrics::counter!("http_requests_total", "route" => route.to_string(), "method" => method.to_string(), "status" => status.to_string())
}
