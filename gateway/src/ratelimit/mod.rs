//! Rate limits at the edge, in one tower layer ([`enforce`]) in front of every route but
//! the probes (the payment providers' webhooks have a class of their own).
//!
//! - **Who:** a signed-in caller is counted per user at the limit of the tier their
//!   (verified) token carries; anyone else per client address. The address is the
//!   connection's peer, or, when the peer is a trusted proxy
//!   (`DUOVARSITY_TRUSTED_PROXIES`), the right-most `X-Forwarded-For` entry that is not a
//!   trusted proxy: a client cannot pick its own key by sending the header. IPv6 clients
//!   are counted per network (`DUOVARSITY_RATE_LIMITS_IPV6_PREFIX`, a /64 by default),
//!   since one subscriber may use any of its 2^64 addresses.
//! - **What:** see [`policy`]. Sign-in routes and webhooks are counted per address for
//!   everyone.
//! - **Where:** in memory (one gateway), or in Redis when `DUOVARSITY_REDIS_URL` is set
//!   (exact across gateways; see [`store`]). Redis failing never fails a request.
//! - **Answer:** every limited response carries `RateLimit-Policy` and `RateLimit`
//!   (draft-ietf-httpapi-ratelimit-headers); a refusal is 429 problem+json with reason
//!   `RATE_LIMITED` and `Retry-After`. Counted in `rate_limit_decisions_total{class,outcome}`.

pub mod policy;
pub mod store;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use duovarsity_common::auth::{TokenVerifier, bearer_token};
use duovarsity_common::pubsub::{REDIS_DEADLINE, RedisLink};
use duovarsity_config::Config;
use duovarsity_config::Rate;
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use self::policy::{BUILT_IN, Policy, PolicyError, RouteClass};
use self::store::{Decision, Local, Shared, Store};
use crate::problem::Problem;

/// Keys remembered in memory (per store).
const CAPACITY: u64 = 1_000_000;
/// How long a failed Redis is left alone before the next try.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Paths never limited: probes and scrapes.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/status" | "/metrics")
}

/// The payment providers' webhooks.
fn is_webhook(path: &str) -> bool {
    path.starts_with("/v1/payments/webhooks/")
}

/// What a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// Per address, signed in or not.
    SignIn,
    /// Per address.
    Webhook,
    /// Per user by tier, or per address without a valid token.
    Route(RouteClass),
}

/// The key of a client address: an IPv4 address (or an IPv4-mapped IPv6 one) alone, an
/// IPv6 address by its network of `ipv6_prefix` bits.
fn address_key(ip: IpAddr, ipv6_prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => ipnet::Ipv6Net::new(v6, ipv6_prefix.min(128))
                .map_or_else(|_| v6.to_string(), |net| net.trunc().to_string()),
        },
    }
}

/// Sign-in, registration and token refresh.
fn is_sign_in(path: &str) -> bool {
    path.starts_with("/v1/auth/")
}

fn route_class(method: &http::Method, path: &str) -> RouteClass {
    if path.starts_with("/v1/ai/") {
        RouteClass::Ai
    } else if matches!(*method, http::Method::GET | http::Method::HEAD) {
        RouteClass::Reads
    } else {
        RouteClass::Writes
    }
}

/// Why the limiter cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("{0}: {1}")]
    File(PathBuf, std::io::Error),
    #[error("rate limits: Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The limits of one gateway.
pub struct RateLimiter {
    policy: RwLock<Arc<Policy>>,
    file: Option<PathBuf>,
    overrides: BTreeMap<String, String>,
    store: Store,
    verifier: Arc<TokenVerifier>,
    trusted: Vec<ipnet::IpNet>,
    ipv6_prefix: u8,
}

fn read_policy(
    file: Option<&PathBuf>,
    overrides: &BTreeMap<String, String>,
) -> Result<Policy, LimitsError> {
    let text = match file {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| LimitsError::File(path.clone(), e))?
        }
        None => BUILT_IN.to_string(),
    };
    Ok(Policy::parse(&text, overrides)?)
}

impl RateLimiter {
    /// The limiter `config` asks for (None when limits are off), reloading its policy file
    /// until `shutdown` and reporting each reload to `audit`.
    pub async fn start(
        config: &Config,
        verifier: Arc<TokenVerifier>,
        shutdown: CancellationToken,
        audit: duovarsity_common::reload::Audit,
    ) -> Result<Option<Arc<Self>>, LimitsError> {
        if !config.rate_limits_enabled {
            return Ok(None);
        }
        let policy = read_policy(config.rate_limits_file.as_ref(), &config.rate_limit)?;
        let store = match &config.redis_url {
            Some(url) => {
                let link = RedisLink::connect(
                    redis::Client::open(url.expose().as_str())?,
                    REDIS_DEADLINE,
                    REDIS_RETRY_AFTER,
                    "each gateway enforces its share of every rate limit",
                )
                .await?;
                Store::Shared(Shared::new(link, config.gateway_replicas, CAPACITY))
            }
            None => Store::Local(Local::new(CAPACITY)),
        };
        let limiter = Arc::new(Self {
            policy: RwLock::new(Arc::new(policy)),
            file: config.rate_limits_file.clone(),
            overrides: config.rate_limit.clone(),
            store,
            verifier,
            trusted: config.trusted_proxy_networks(),
            ipv6_prefix: config.rate_limits_ipv6_prefix,
        });
        let watcher = limiter.clone();
        tokio::spawn(async move {
            let file = watcher.file.clone();
            duovarsity_common::reload::watch(file.clone(), shutdown, || {
                let refused = watcher.reload().err();
                audit.record("rate-limits", file.as_deref(), refused);
            })
            .await;
        });
        Ok(Some(limiter))
    }

    fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the policy file again; a bad one is refused, logged and counted, and the
    /// running policy stays.
    fn reload(&self) -> Result<(), String> {
        match read_policy(self.file.as_ref(), &self.overrides) {
            Ok(policy) => {
                *self
                    .policy
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policy);
                metrics::counter!("rate_limit_reloads_total", "outcome" => "applied").increment(1);
                tracing::info!("rate-limit policy reloaded");
                Ok(())
            }
            Err(error) => {
                metrics::counter!("rate_limit_reloads_total", "outcome" => "refused").increment(1);
                tracing::error!(%error, "rate-limit policy refused; the running one stays");
                Err(error.to_string())
            }
        }
    }

    /// The client's address: the peer, unless it is a trusted proxy; then the right-most
    /// forwarded address that is not one.
    fn client_ip(&self, request: &Request) -> Option<IpAddr> {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())?;
        let trusted = |ip: &IpAddr| self.trusted.iter().any(|net| net.contains(ip));
        if !trusted(&peer) {
            return Some(peer);
        }
        let forwarded = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
            .collect::<Vec<_>>();
        Some(
            forwarded
                .into_iter()
                .rev()
                .find(|ip| !trusted(ip))
                .unwrap_or(peer),
        )
    }

    /// What the limit depends on, read from the request up front (a request body is not
    /// `Sync`, so the request is not held across awaits): the policy, the scope, the
    /// bearer token and the client's address key.
    fn inspect(&self, request: &Request) -> (Arc<Policy>, Scope, Option<String>, String) {
        let path = request.uri().path();
        let address = self.client_ip(request).map_or_else(
            || "unknown".to_string(),
            |ip| address_key(ip, self.ipv6_prefix),
        );
        let scope = if is_sign_in(path) {
            Scope::SignIn
        } else if is_webhook(path) {
            Scope::Webhook
        } else {
            Scope::Route(route_class(request.method(), path))
        };
        let token =
            bearer_token(request.headers().get(http::header::AUTHORIZATION)).map(str::to_string);
        (self.policy(), scope, token, address)
    }

    /// The key, the limit and its name.
    async fn classify(
        &self,
        (policy, scope, token, address): (Arc<Policy>, Scope, Option<String>, String),
    ) -> (String, Rate, String) {
        match scope {
            Scope::SignIn => (
                format!("sign_in:{address}"),
                policy.sign_in,
                "sign_in".into(),
            ),
            Scope::Webhook => (
                format!("webhook:{address}"),
                policy.webhook,
                "webhook".into(),
            ),
            Scope::Route(class) => self.classify_caller(policy, class, token, address).await,
        }
    }

    async fn classify_caller(
        &self,
        policy: Arc<Policy>,
        class: RouteClass,
        token: Option<String>,
        address: String,
    ) -> (String, Rate, String) {
        let claims = match token {
            Some(token) => self.verifier.verify(&token).await.ok(),
            None => None,
        };
        let signed_in = claims.and_then(|claims| {
            let rate = policy.tier(&claims.tier)?.get(class);
            Some((claims.sub, claims.tier, rate))
        });
        match signed_in {
            Some((user, tier, rate)) => (
                format!("user:{user}:{}", class.as_str()),
                rate,
                format!("{tier}.{}", class.as_str()),
            ),
            // No token, or one that will be refused downstream: counted by address.
            None => (
                format!("anonymous:{address}"),
                policy.anonymous,
                "anonymous".into(),
            ),
        }
    }
}

/// `RateLimit-Policy` and `RateLimit` for `decision` under `name`.
fn headers(headers: &mut HeaderMap, name: &str, rate: Rate, decision: &Decision) {
    let policy = format!("\"{name}\";q={};w={}", rate.count, rate.period.as_secs());
    let state = format!(
        "\"{name}\";r={};t={}",
        decision.remaining,
        decision.reset.as_secs_f64().ceil() as u64
    );
    for (header, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header, value);
        }
    }
}

/// The layer's handler (`axum::middleware::from_fn_with_state`).
pub async fn enforce(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    if exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let inspected = limiter.inspect(&request);
    let (key, rate, name) = limiter.classify(inspected).await;
    let decision = limiter.store.decide(&key, rate).await;
    let outcome = if decision.allowed {
        "allowed"
    } else {
        "refused"
    };
    metrics::counter!("rate_limit_decisions_total", "class" => name.clone(), "outcome" => outcome)
        .increment(1);
    let mut response = if decision.allowed {
        next.run(request).await
    } else {
        let wait = decision.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let mut response = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            Code::ResourceExhausted,
            format!("rate limit {name} ({rate}) reached; retry in {wait} s"),
        )
        .with_reason("RATE_LIMITED")
        .into_response();
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(wait));
        response
    };
    headers(response.headers_mut(), &name, rate, &decision);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_network() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(address_key(ip("203.0.113.7"), 64), "203.0.113.7");
        assert_eq!(address_key(ip("::ffff:203.0.113.7"), 64), "203.0.113.7");
        let one = address_key(ip("2001:db8:1:2:aaaa::1"), 64);
        assert_eq!(one, "2001:db8:1:2::/64");
        assert_eq!(address_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64), one);
        assert_ne!(address_key(ip("2001:db8:1:3::1"), 64), one);
        assert_eq!(address_key(ip("2001:db8:1:2::1"), 48), "2001:db8:1::/48");
        assert_eq!(address_key(ip("2001:db8::1"), 128), "2001:db8::1/128");
    }

    #[test]
    fn webhooks_and_sign_in_have_their_own_scopes() {
        assert!(is_webhook("/v1/payments/webhooks/razorpay"));
        assert!(!exempt("/v1/payments/webhooks/stripe"));
        assert!(exempt("/metrics"));
    }
}
