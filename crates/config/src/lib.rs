//! Typed configuration, read once at start: built-in defaults, then an optional TOML file,
//! then `DUOVARSITY_*` environment variables, deserialised into [`Config`] and validated.
//!
//! Every setting is a flat key whose environment variable is `DUOVARSITY_` plus the key in
//! upper case (`http_addr` is `DUOVARSITY_HTTP_ADDR`). Unknown `DUOVARSITY_*` variables are
//! refused, so a typo does not silently fall back to a default. A bad value is reported with
//! the name of the variable (or file key) it came from; the binaries exit with status 2.
//!
//! Tests build a `Config` from a map ([`Config::from_sources`]) instead of mutating the
//! process environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use payments::{PaymentProvider, PaymentSandbox};
pub use traffic::{RATE_CLASSES, Rate, RateError};

use duovarsity_common::secret::Secret;
pub use duovarsity_common::telemetry::LogFormat;
use sources::{
    EnvVars, comma_list, describe_figment_error, optional_lenient_string, service_url_map,
};

/// Environment variables with this prefix configure the platform.
pub const ENV_PREFIX: &str = "DUOVARSITY_";
/// Variables with this prefix belong to the test harness, not to the platform.
const TEST_ENV_PREFIX: &str = "DUOVARSITY_TEST_";
/// Names the TOML file to read (the only variable that is not a setting).
pub const CONFIG_FILE_VAR: &str = "DUOVARSITY_CONFIG";

/// Every setting of the platform. Field docs are the reference table in the README.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the gateway listens for REST and WebSocket traffic.
    pub http_addr: SocketAddr,
    /// Where the gRPC services listen (embedded mode: all services on this one port).
    pub grpc_addr: SocketAddr,
    /// The admin listener: `/metrics`, `/healthz`, and the gateway's `/status` and
    /// `/readyz`. Never the public port; in a cluster, what probes and Prometheus reach.
    pub admin_addr: SocketAddr,
    /// SQLite files and local keys live here in embedded mode.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`. Unset: one SQLite file per service in `data_dir`.
    pub database_url: Option<Secret<String>>,
    /// A read replica (`postgres://…`) for reads that tolerate staleness. Unset: the primary.
    pub database_replica_url: Option<Secret<String>>,
    /// Where `duovarsity migrate` applies migrations when it must not use `database_url`:
    /// PostgreSQL itself when services reach it through a transaction-mode pooler
    /// (PgBouncer), which cannot run migrations. Unset: `database_url`.
    pub migrate_database_url: Option<Secret<String>>,
    /// Connections per pool.
    pub database_max_connections: u32,
    /// Apply each service's pending migrations when it starts. Production rollouts run
    /// `duovarsity migrate` once and set this to false; a service then refuses to start on
    /// a schema that lacks its migrations.
    pub migrate_on_start: bool,
    /// Directory of Ed25519 signing keys (`<kid>.pem`, PKCS#8). Unset: `<data_dir>/keys`.
    pub jwt_keys_dir: Option<PathBuf>,
    /// Generate a signing key when the directory has none (embedded mode). Production
    /// mounts keys and sets this to false, so a missing mount is an error, not a new key.
    pub jwt_generate_keys: bool,
    /// How often the gateway and services fetch the user service's published keys
    /// (JWKS) again, in seconds: a key removed from the set stops verifying within this
    /// period. An unknown `kid` also triggers a fetch.
    pub jwks_refresh_secs: u64,
    /// Access token lifetime in seconds.
    pub access_token_ttl_secs: u64,
    /// Refresh token lifetime in seconds.
    pub refresh_token_ttl_secs: u64,
    /// Creates (or promotes) this admin account at start, with `bootstrap_admin_password`.
    #[serde(deserialize_with = "optional_lenient_string")]
    pub bootstrap_admin_email: Option<String>,
    pub bootstrap_admin_password: Option<Secret<String>>,
    /// gRPC endpoints of other services, by service name: `DUOVARSITY_<NAME>_SERVICE_URL`
    /// (`DUOVARSITY_USER_SERVICE_URL`, ...) or a `[service_urls]` table in the file. One URL,
    /// or several separated by commas (balanced per request), or one discovered source:
    /// `dns:///HOST:PORT` or `kubernetes:///SERVICE[.NAMESPACE]:PORT`
    /// ([`duovarsity_common::discovery`]). Unset: `http://<grpc_addr>`
    /// for the user service (token keys); other services are routed only when set, and in
    /// embedded mode every service is this process.
    #[serde(deserialize_with = "service_url_map")]
    pub service_urls: BTreeMap<String, String>,
    /// The Kubernetes API server that `kubernetes:///` upstreams are watched through
    /// (`http://127.0.0.1:8001` for a `kubectl proxy`). Unset: found as `kubectl` finds it
    /// (the pod's service account, then `KUBECONFIG`).
    #[serde(deserialize_with = "optional_lenient_string")]
    pub kubernetes_api_url: Option<String>,
    /// Where lesson media is stored: `file:///abs/dir` or `s3://bucket/prefix` (with the
    /// usual `AWS_*` variables). Unset: `<data_dir>/media`.
    #[serde(deserialize_with = "optional_lenient_string")]
    pub media_url: Option<String>,
    /// Object store options for `media_url`, comma-separated `key=value` (for S3:
    /// `aws_endpoint=…,aws_region=…,aws_access_key_id=…,aws_secret_access_key=…,
    /// aws_allow_http=true`). `AWS_*` environment variables are read too; these win.
    pub media_options: Option<Secret<String>>,
    /// Largest media upload, in bytes (the gateway accepts bodies this large on upload
    /// routes only).
    pub media_max_bytes: usize,
    /// Outgoing mail: unset writes `.eml` files under `<data_dir>/mail`; `smtp://host:port`
    /// sends through an SMTP relay.
    #[serde(deserialize_with = "optional_lenient_string")]
    pub mail_url: Option<String>,
    /// The From address of platform mail.
    pub mail_from: String,
    /// Live sockets one user may hold on all gateways together; opening one more closes
    /// their oldest (4409).
    pub live_connections_per_user: u32,
    /// Announcements one course may get per hour (each reaches every enrolled learner's
    /// inbox and email); beyond it, RESOURCE_EXHAUSTED with the time to wait.
    pub announcements_per_hour: u32,
    /// How often the gateway pings a live WebSocket, in seconds; one that has not answered
    /// for three intervals is closed.
    pub live_ping_secs: u64,
    /// `redis://…`: the shared L2 cache and cross-replica cache invalidation. Unset: caches
    /// are in-process only (right for one process; several replicas need Redis).
    pub redis_url: Option<Secret<String>>,
    /// Kafka bootstrap servers (`host:port`, comma-separated): services publish and consume
    /// events there. Unset: the embedded bus, a file in `data_dir` (one process only).
    #[serde(deserialize_with = "optional_lenient_string")]
    pub kafka_brokers: Option<String>,
    /// The most record bytes the embedded bus keeps for consumers that have not caught up;
    /// past it, publishing waits (outbox backlogs grow) instead of dropping events.
    pub bus_max_bytes: u64,
    /// Partitions of each event topic the platform creates on Kafka.
    pub kafka_partitions: i32,
    /// Replicas of each event topic the platform creates on Kafka.
    pub kafka_replication: i32,
    /// Prepended to every topic and consumer group name, so several environments can
    /// share one cluster.
    pub kafka_topic_prefix: String,
    /// `razorpay` or `stripe`: the provider that takes payments at checkout. Webhooks of
    /// every configured provider are accepted.
    pub payment_provider: PaymentProvider,
    /// The built-in Razorpay sandbox (it gives paid courses away: anyone may "pay" on its
    /// page): `auto` runs it only when the gateway listens on a loopback address, `on`
    /// also on a public one (logged as a warning), `off` never. Only without
    /// `razorpay_api_url`, and only where the gateway runs in the same process.
    pub payment_sandbox: PaymentSandbox,
    /// Razorpay's API base URL (`https://api.razorpay.com`). Unset: the built-in sandbox,
    /// which `duovarsity up` serves under `/sandbox` (Razorpay test mode, no account).
    #[serde(deserialize_with = "optional_lenient_string")]
    pub razorpay_api_url: Option<String>,
    /// Razorpay key id (public, given to Razorpay Checkout); needed with the API URL.
    #[serde(deserialize_with = "optional_lenient_string")]
    pub razorpay_key_id: Option<String>,
    /// Razorpay key secret: API calls and payment signatures. The sandbox generates one in
    /// `data_dir` when unset.
    pub razorpay_key_secret: Option<Secret<String>>,
    /// Secret of Razorpay webhooks (`X-Razorpay-Signature`). The sandbox generates one in
    /// `data_dir` (`razorpay-webhook-secret`) when unset.
    pub razorpay_webhook_secret: Option<Secret<String>>,
    /// Stripe's API base URL.
    pub stripe_api_url: String,
    /// Stripe secret key (`sk_...`). Unset: Stripe is off.
    pub stripe_secret_key: Option<Secret<String>>,
    /// Signing secret of the Stripe webhook endpoint (`whsec_...`); needed with the key.
    pub stripe_webhook_secret: Option<Secret<String>>,
    /// How old a Stripe webhook's signed timestamp may be, in seconds (replay window).
    pub stripe_webhook_tolerance_secs: u64,
    /// Days after capture during which a learner may refund their own order.
    pub payment_refund_window_days: u32,
    /// The instructor's share of a sale, in basis points (7000 = 70 %).
    pub payment_instructor_share_bps: u32,
    /// Orders unpaid for this long are checked with the provider by the reconciliation
    /// job (a missed webhook), in seconds.
    pub payment_reconcile_after_secs: u64,
    /// Orders unpaid for this long expire (abandoned checkouts), in seconds.
    pub payment_order_ttl_secs: u64,
    /// The AI-routing service's model catalog and policy (TOML); reloaded when it changes
    /// or on SIGHUP. Unset: the built-in catalog (every model on the offline sandbox).
    pub ai_catalog_file: Option<PathBuf>,
    /// Feature flags in flagd's JSON format, imported into the user service's flags (and
    /// its audit trail, source "file") at start and whenever the file changes; flags it
    /// does not name are left alone. Unset: flags come from the admin API only.
    pub flags_file: Option<PathBuf>,
    /// How often every process re-reads the published flags from Redis (the safety net
    /// for a missed change message), and the owner re-publishes them, in seconds.
    pub flags_reload_secs: u64,
    /// How long an in-process (L1) cache entry lives, in seconds: the staleness bound if a
    /// replica misses an invalidation message.
    pub cache_l1_ttl_secs: u64,
    /// Entries per in-process cache.
    pub cache_l1_capacity: u64,
    /// Origins allowed by CORS, comma-separated; `*` allows any. Empty: CORS off.
    #[serde(deserialize_with = "comma_list")]
    pub cors_allowed_origins: Vec<String>,
    /// The gateway's rate-limit policy (TOML: limits per tier and route class), reloaded
    /// when the file changes or on SIGHUP. Unset: the built-in policy.
    pub rate_limits_file: Option<PathBuf>,
    /// Overrides of single limits: `DUOVARSITY_RATE_LIMIT_<CLASS>=<n>/<s|m|h>` (classes:
    /// ANONYMOUS, SIGN_IN, WEBHOOK, and `<TIER>_<READS|WRITES|AI>` for the tiers FREE,
    /// STANDARD, PREMIUM and THROTTLED).
    #[serde(deserialize_with = "service_url_map")]
    pub rate_limit: BTreeMap<String, String>,
    /// Whether the gateway enforces rate limits.
    pub rate_limits_enabled: bool,
    /// Proxies (IP addresses or CIDR blocks, comma-separated) whose `X-Forwarded-For` the
    /// gateway believes when it keys anonymous calls by client address.
    #[serde(deserialize_with = "comma_list")]
    pub trusted_proxies: Vec<String>,
    /// IPv6 clients are limited per network of this prefix length (a /64 is one
    /// subscriber's, who can pick any address in it).
    pub rate_limits_ipv6_prefix: u8,
    /// How many gateways share the limits: while Redis is unreachable, each enforces this
    /// share of every limit on its own.
    pub gateway_replicas: u32,
    /// A client must send a request's headers within this many milliseconds (and a
    /// keep-alive connection idle this long is closed).
    pub header_read_timeout_ms: u64,
    /// A client must send a request's body within this many milliseconds of its headers,
    /// or it is answered 408 and the connection closed.
    pub body_read_timeout_ms: u64,
    /// Connections the gateway holds at once (live WebSockets included); past it new ones
    /// are closed at once and counted. Keep it below the process's file limit.
    pub max_connections: usize,
    /// Concurrent streams on one HTTP/2 connection to the gateway.
    pub http2_max_streams: u32,
    /// Calls one gateway keeps in flight to one upstream service (0: no cap). Past a share
    /// of it, lower tiers are shed with 503 first: throttled at 50 %, free and anonymous at
    /// 75 %, standard at 90 %; premium, instructors and admins may use it all.
    pub upstream_max_in_flight: usize,
    /// Runtime lag (ms) past which the gateway cuts its cap on calls started at once (0:
    /// no such cap). The cap rises back while calls run on time; each tier gets the share
    /// of it that it gets of `upstream_max_in_flight`. It keeps refusals fast when the
    /// CPU, not an upstream, is what is full.
    pub shed_lag_ms: u64,
    /// Largest accepted request body at the gateway, in bytes (JSON and webhooks; media
    /// uploads have `media_max_bytes`).
    pub body_limit_bytes: usize,
    /// Bytes of `public, max-age` answers the gateway keeps in its edge cache (0: none).
    pub edge_cache_bytes: u64,
    /// Deadline for one upstream call from the gateway, in milliseconds.
    pub request_timeout_ms: u64,
    /// Deadline for one server-streamed answer (AI answers as server-sent events) from the
    /// gateway, in milliseconds: longer than `request_timeout_ms`, since a stream delivers
    /// as it goes.
    pub stream_timeout_ms: u64,
    /// Deadlines of particular methods or services, comma-separated
    /// `<package.Service>[/<Method>]=<ms>` (a method's entry wins over its service's);
    /// the others get `request_timeout_ms`. Sent upstream as `grpc-timeout`.
    #[serde(deserialize_with = "comma_list")]
    pub route_timeouts: Vec<String>,
    /// How long shutdown waits for in-flight requests, in seconds.
    pub shutdown_grace_secs: u64,
    /// `auto`, `text` or `json`.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            database_replica_url: None,
            migrate_database_url: None,
            database_max_connections: 16,
            migrate_on_start: true,
            jwt_keys_dir: None,
            jwt_generate_keys: true,
            jwks_refresh_secs: 60,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 30 * 24 * 60 * 60,
            bootstrap_admin_email: None,
            bootstrap_admin_password: None,
            service_urls: BTreeMap::new(),
            media_url: None,
            media_options: None,
            media_max_bytes: 25 * 1024 * 1024,
            mail_url: None,
            mail_from: "Duovarsity <no-reply@duovarsity.local>".to_string(),
            live_connections_per_user: 16,
            announcements_per_hour: 30,
            live_ping_secs: 15,
            redis_url: None,
            kafka_brokers: None,
            kubernetes_api_url: None,
            bus_max_bytes: 1 << 30,
            kafka_partitions: 6,
            kafka_replication: 1,
            kafka_topic_prefix: String::new(),
            ai_catalog_file: None,
            flags_file: None,
            flags_reload_secs: 10,
            payment_provider: PaymentProvider::Razorpay,
            payment_sandbox: PaymentSandbox::Auto,
            razorpay_api_url: None,
            razorpay_key_id: None,
            razorpay_key_secret: None,
            razorpay_webhook_secret: None,
            stripe_api_url: "https://api.stripe.com".to_string(),
            stripe_secret_key: None,
            stripe_webhook_secret: None,
            stripe_webhook_tolerance_secs: 300,
            payment_refund_window_days: 14,
            payment_instructor_share_bps: 7_000,
            payment_reconcile_after_secs: 600,
            payment_order_ttl_secs: 2 * 60 * 60,
            cache_l1_ttl_secs: 10,
            cache_l1_capacity: 10_000,
            cors_allowed_origins: Vec::new(),
            rate_limits_file: None,
            rate_limit: BTreeMap::new(),
            rate_limits_enabled: true,
            trusted_proxies: Vec::new(),
            rate_limits_ipv6_prefix: 64,
            gateway_replicas: 1,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            max_connections: 16_000,
            http2_max_streams: 256,
            upstream_max_in_flight: 2048,
            shed_lag_ms: 10,
            body_limit_bytes: 1024 * 1024,
            request_timeout_ms: 30_000,
            stream_timeout_ms: 300_000,
            edge_cache_bytes: 64 << 20,
            route_timeouts: Vec::new(),
            shutdown_grace_secs: 20,
            log_format: LogFormat::Auto,
        }
    }
}

/// A setting that could not be read or is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {source_name}: {message}")]
pub struct ConfigError {
    /// The variable or file key the bad value came from, e.g. `DUOVARSITY_HTTP_ADDR`.
    pub source_name: String,
    pub message: String,
}

impl ConfigError {
    fn setting(key: &str, message: impl Into<String>) -> Self {
        Self {
            source_name: env_var_name(key),
            message: message.into(),
        }
    }
}

/// `value` of setting `key` lies in `range`, or the error says where it should be.
fn within<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ConfigError::setting(
        key,
        format!("must be between {} and {}", range.start(), range.end()),
    ))
}

/// `http_addr` -> `DUOVARSITY_HTTP_ADDR`.
pub fn env_var_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_uppercase())
}

impl Config {
    /// Reads the process environment (and the file named by `DUOVARSITY_CONFIG` or `file`).
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| env.get(CONFIG_FILE_VAR).map(PathBuf::from));
        Self::from_sources(file.as_deref(), &env)
    }

    /// Defaults, then the TOML `file`, then the `DUOVARSITY_*` entries of `env`; validated.
    pub fn from_sources(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError {
                    source_name: CONFIG_FILE_VAR.to_string(),
                    message: format!("file {} does not exist", file.display()),
                });
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(EnvVars::from_map(env));
        let config: Config = figment.extract().map_err(describe_figment_error)?;
        config.validate()?;
        Ok(config)
    }
}

mod payments;
mod services;
mod settings;
mod sources;
#[cfg(test)]
mod tests;
mod traffic;
mod validate;
