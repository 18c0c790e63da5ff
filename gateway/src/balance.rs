//! Per-request balancing over an upstream's endpoints, with outlier ejection.
//!
//! - **Choice:** power of two choices. Two endpoints are drawn at random and the one
//!   with the lower load wins. Load is peak-EWMA latency (a slow answer raises it at once,
//!   and it decays over about a second) times one plus the calls in flight.
//! - **Ejection:** an endpoint whose calls fail at the transport level
//!   [`EJECT_AFTER`] times in a row is taken out for a backoff (1 s, doubling to 30 s
//!   while it keeps failing), but never the last one left: with every endpoint ejected,
//!   all are candidates again.
//! - **Connections:** each endpoint is one lazily connected HTTP/2 channel.
//! - **Changes:** discovery replaces the endpoint set ([`Pool::update`]). Endpoints that
//!   stay keep their connection and statistics; calls in flight on an endpoint that left
//!   finish on it (they hold it), and new calls no longer choose it.
//!
//! Why not tower's `p2c::Balance` over `PeakEwma`: both are services driven through
//! `&mut self` (`poll_ready`, then `call`), and `PeakEwma` measures a call only when the
//! call passes through it. Shared by every request of a gateway they would sit behind a
//! `Buffer` (one worker task and a channel hop per call), and the balancer could not leave
//! out, for one request, the endpoint that just failed it, nor the ejected ones. This pool
//! is read without a lock per pick and keeps the same estimate (peak-EWMA latency times
//! calls in flight, as `PeakEwma`'s cost is). The retry budget is tower's (`TpsBudget`,
//! [`crate::upstream`]).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::Rng as _;
use tonic::transport::Channel;

/// How calls reach an endpoint: its HTTP/2 channel, or (embedded mode) the services in
/// this process.
pub type Transport = duovarsity_common::grpc::LocalGrpc;

/// The transport of a channel.
pub fn remote(channel: Channel) -> Transport {
    Transport::new(tower::ServiceExt::map_err(
        channel,
        |error: tonic::transport::Error| duovarsity_common::grpc::CallError(Box::new(error)),
    ))
}

/// Consecutive transport failures that eject an endpoint.
pub const EJECT_AFTER: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How fast the latency estimate forgets (time constant).
const DECAY: Duration = Duration::from_secs(1);
/// What an endpoint without samples is assumed to take.
const DEFAULT_LATENCY: Duration = Duration::from_millis(5);

struct Ewma {
    nanos: f64,
    at: Instant,
}

struct Ejection {
    until: Option<Instant>,
    backoff: Duration,
}

/// One endpoint of an upstream.
pub struct EndpointState {
    pub url: String,
    pub transport: Transport,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    latency: Mutex<Ewma>,
    ejection: Mutex<Ejection>,
}

impl EndpointState {
    pub fn new(url: String, transport: Transport) -> Self {
        Self {
            url,
            transport,
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            latency: Mutex::new(Ewma {
                nanos: DEFAULT_LATENCY.as_nanos() as f64,
                at: Instant::now(),
            }),
            ejection: Mutex::new(Ejection {
                until: None,
                backoff: FIRST_BACKOFF,
            }),
        }
    }

    fn load(&self) -> f64 {
        let latency = self.latency.lock().expect("latency lock").nanos;
        latency * (self.in_flight.load(Ordering::Relaxed) + 1) as f64
    }

    fn ejected(&self, now: Instant) -> bool {
        self.ejection
            .lock()
            .expect("ejection lock")
            .until
            .is_some_and(|until| now < until)
    }

    fn observe(&self, elapsed: Duration) {
        let mut ewma = self.latency.lock().expect("latency lock");
        let sample = elapsed.as_nanos() as f64;
        if sample > ewma.nanos {
            ewma.nanos = sample;
        } else {
            let since = ewma.at.elapsed().as_secs_f64();
            let keep = (-since / DECAY.as_secs_f64()).exp();
            ewma.nanos = ewma.nanos * keep + sample * (1.0 - keep);
        }
        ewma.at = Instant::now();
    }
}

/// A call in flight on an endpoint; say how it ended with [`Call::finish`].
pub struct Call<'a> {
    endpoint: Arc<EndpointState>,
    started: Instant,
    service: &'a str,
}

impl Call<'_> {
    pub fn url(&self) -> &str {
        &self.endpoint.url
    }

    /// How to reach the endpoint.
    pub fn transport(&self) -> Transport {
        self.endpoint.transport.clone()
    }

    /// `transport_failed`: the endpoint could not be reached or dropped the call.
    pub fn finish(self, transport_failed: bool) {
        let endpoint = &self.endpoint;
        endpoint.observe(self.started.elapsed());
        if !transport_failed {
            endpoint.failures.store(0, Ordering::Relaxed);
            endpoint.ejection.lock().expect("ejection lock").backoff = FIRST_BACKOFF;
            return;
        }
        let failures = endpoint.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= EJECT_AFTER {
            let mut ejection = endpoint.ejection.lock().expect("ejection lock");
            ejection.until = Some(Instant::now() + ejection.backoff);
            tracing::warn!(service = self.service, endpoint = %endpoint.url, backoff = ?ejection.backoff, "endpoint ejected after repeated failures");
            metrics::counter!("gateway_endpoint_ejections_total", "service" => self.service.to_string())
                .increment(1);
            ejection.backoff = (ejection.backoff * 2).min(MAX_BACKOFF);
            endpoint.failures.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints of one upstream service.
pub struct Pool {
    service: String,
    endpoints: RwLock<Arc<Vec<Arc<EndpointState>>>>,
}

impl Pool {
    pub fn new(service: &str, endpoints: Vec<EndpointState>) -> Self {
        Self {
            service: service.to_string(),
            endpoints: RwLock::new(Arc::new(endpoints.into_iter().map(Arc::new).collect())),
        }
    }

    fn snapshot(&self) -> Arc<Vec<Arc<EndpointState>>> {
        self.endpoints
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Replaces the endpoint set with `urls`, keeping the endpoints that stay and
    /// connecting new ones with `connect`. Says whether anything changed.
    pub fn update(&self, urls: &[String], connect: impl Fn(&str) -> Option<Transport>) -> bool {
        let current = self.snapshot();
        let unchanged = current.len() == urls.len()
            && current.iter().all(|endpoint| urls.contains(&endpoint.url));
        if unchanged {
            return false;
        }
        let next: Vec<Arc<EndpointState>> = urls
            .iter()
            .filter_map(|url| match current.iter().find(|e| &e.url == url) {
                Some(endpoint) => Some(endpoint.clone()),
                None => connect(url)
                    .map(|transport| Arc::new(EndpointState::new(url.clone(), transport))),
            })
            .collect();
        tracing::info!(service = %self.service, endpoints = ?urls, "upstream endpoints changed");
        *self
            .endpoints
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        true
    }

    /// Starts a call on the better of two random candidates, avoiding `avoid` (an
    /// endpoint that just failed this request) when another is available. None while
    /// the upstream has no endpoints.
    pub fn pick(&self, avoid: Option<&str>) -> Option<Call<'_>> {
        let endpoints = self.snapshot();
        let now = Instant::now();
        let mut candidates: Vec<&Arc<EndpointState>> = endpoints
            .iter()
            .filter(|e| !e.ejected(now) && Some(e.url.as_str()) != avoid)
            .collect();
        if candidates.is_empty() {
            candidates = endpoints
                .iter()
                .filter(|e| Some(e.url.as_str()) != avoid)
                .collect();
        }
        if candidates.is_empty() {
            candidates = endpoints.iter().collect();
        }
        let endpoint = match candidates.len() {
            0 => return None,
            1 => candidates[0],
            n => {
                let mut random = rand::thread_rng();
                let a = random.gen_range(0..n);
                let b = (a + random.gen_range(1..n)) % n;
                let (a, b) = (candidates[a], candidates[b]);
                if a.load() <= b.load() { a } else { b }
            }
        };
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Call {
            endpoint: endpoint.clone(),
            started: Instant::now(),
            service: &self.service,
        })
    }

    /// Calls in flight on every endpoint.
    pub fn in_flight(&self) -> usize {
        self.snapshot()
            .iter()
            .map(|e| e.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    /// Each endpoint with whether it is ejected now (for `/status`).
    pub fn states(&self) -> Vec<(String, bool)> {
        let now = Instant::now();
        self.snapshot()
            .iter()
            .map(|e| (e.url.clone(), e.ejected(now)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.snapshot().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(urls: &[&str]) -> Pool {
        Pool::new(
            "svc",
            urls.iter()
                .map(|url| {
                    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1")
                        .connect_lazy();
                    EndpointState::new(url.to_string(), remote(channel))
                })
                .collect(),
        )
    }

    #[tokio::test]
    async fn a_failing_endpoint_is_ejected_but_never_the_last_one() {
        let pool = pool(&["a", "b"]);
        for _ in 0..EJECT_AFTER {
            let call = pool.pick(Some("b")).unwrap();
            assert_eq!(call.url(), "a");
            call.finish(true);
        }
        // "a" is out: every pick goes to "b" while it is ejected.
        for _ in 0..20 {
            let call = pool.pick(None).unwrap();
            assert_eq!(call.url(), "b");
            call.finish(false);
        }
        // Both failing: "b" is ejected too, and then both are candidates again.
        for _ in 0..EJECT_AFTER {
            pool.pick(Some("a")).unwrap().finish(true);
        }
        assert!(pool.states().iter().all(|(_, ejected)| *ejected));
        let call = pool.pick(None).unwrap();
        assert!(["a", "b"].contains(&call.url()), "calls still go somewhere");
    }

    #[tokio::test]
    async fn the_slower_endpoint_gets_less_traffic() {
        let pool = pool(&["fast", "slow"]);
        pool.snapshot()[1].observe(Duration::from_millis(200));
        let slow = (0..100)
            .filter(|_| {
                let call = pool.pick(None).unwrap();
                let url = call.url().to_string();
                drop(call);
                url == "slow"
            })
            .count();
        assert_eq!(slow, 0, "two candidates: the lower load always wins");
    }

    #[tokio::test]
    async fn an_update_keeps_endpoints_that_stay_and_drains_those_that_leave() {
        let pool = pool(&["a", "b"]);
        let leaving = pool.pick(Some("a")).unwrap();
        assert_eq!(leaving.url(), "b");
        let connect = |_: &str| {
            Some(remote(
                tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy(),
            ))
        };
        assert!(pool.update(&["a".to_string(), "c".to_string()], connect));
        assert!(!pool.update(&["c".to_string(), "a".to_string()], connect));
        let urls: Vec<String> = pool.states().into_iter().map(|(url, _)| url).collect();
        assert_eq!(urls, ["a", "c"]);
        // The call on "b" finishes on it; new calls never choose it.
        leaving.finish(false);
        for _ in 0..20 {
            assert_ne!(pool.pick(None).unwrap().url(), "b");
        }
        assert!(pool.update(&[], connect));
        assert!(pool.pick(None).is_none());
    }
}
