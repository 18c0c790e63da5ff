//! Which payment providers this process has, from the configuration, read once at start:
//!
//! - Razorpay with `DUOVARSITY_RAZORPAY_API_URL` and its keys; without the URL, when the
//!   gateway runs in this process (`duovarsity up`) and `DUOVARSITY_PAYMENT_SANDBOX`
//!   allows it (`auto`: only on a loopback address), the built-in sandbox
//!   ([`crate::sandbox`]) served on the gateway's listener, with secrets from the
//!   configuration or generated once into the data directory. The sandbox lets anyone
//!   "pay", so on a public address it runs only when set `on`, with a warning;
//! - Stripe with `DUOVARSITY_STRIPE_SECRET_KEY` and its webhook secret.
//!
//! `DUOVARSITY_PAYMENT_PROVIDER` picks the one that takes payments at checkout; webhooks
//! of every configured provider are accepted. A payment service alone without any
//! provider starts, and its checkout says what to configure.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use duovarsity_common::Error;
use duovarsity_common::secret::Secret;
use duovarsity_config::Config;
use duovarsity_config::PaymentProvider;

use crate::provider::{Provider, ProviderError};
use crate::razorpay::{Razorpay, RazorpaySettings};
use crate::sandbox::Sandbox;
use crate::stripe::{Stripe, StripeSettings};

/// The longest one provider call may take.
const PROVIDER_DEADLINE: Duration = Duration::from_secs(5);
/// The sandbox's public key id (Razorpay test keys start with `rzp_test_`).
pub const SANDBOX_KEY_ID: &str = "rzp_test_duovarsity_sandbox";

/// What the service needs of Razorpay beyond its API client.
#[derive(Clone)]
pub struct RazorpayKeys {
    pub key_id: String,
    /// Signs payments (`order_id|payment_id`).
    pub key_secret: Secret<String>,
    pub webhook_secret: Secret<String>,
    /// The sandbox's hosted checkout page for an order id (none for the real Razorpay,
    /// where clients use Razorpay Checkout with the key id).
    pub checkout_page: Option<String>,
}

pub struct Providers {
    checkout: Option<PaymentProvider>,
    clients: HashMap<&'static str, Arc<dyn Provider>>,
    pub razorpay: Option<RazorpayKeys>,
    pub stripe_webhook_secret: Option<Secret<String>>,
    pub stripe_tolerance_secs: i64,
    pub sandbox: Option<Sandbox>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProvidersError {
    #[error("payment provider client: {0}")]
    Client(#[from] ProviderError),
    #[error("the Razorpay sandbox secret {path}: {source}")]
    SecretFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A secret from the configuration, or else one kept in `file` of the data directory
/// (generated the first time, readable by its owner only).
fn secret_or_file(
    configured: Option<&Secret<String>>,
    data_dir: &Path,
    file: &str,
) -> Result<Secret<String>, ProvidersError> {
    if let Some(secret) = configured {
        return Ok(secret.clone());
    }
    let path = data_dir.join(file);
    let failed = |source| ProvidersError::SecretFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(Secret::new(text.trim().to_string())),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(failed(error)),
    }
    std::fs::create_dir_all(data_dir).map_err(failed)?;
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| failed(std::io::Error::other("no system randomness")))?;
    let secret = hex::encode(bytes);
    write_private(&path, &secret).map_err(failed)?;
    Ok(Secret::new(secret))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

impl Providers {
    /// `with_gateway`: the gateway runs in this process, so the sandbox can be served.
    pub fn from_config(config: &Config, with_gateway: bool) -> Result<Self, ProvidersError> {
        let mut clients: HashMap<&'static str, Arc<dyn Provider>> = HashMap::new();
        let mut razorpay = None;
        let mut sandbox = None;
        if with_gateway && config.razorpay_api_url.is_none() {
            if !config.payment_sandbox_enabled() {
                tracing::info!(
                    http_addr = %config.http_addr,
                    "the payment sandbox is off (DUOVARSITY_PAYMENT_SANDBOX; auto runs it on a loopback address only)"
                );
            } else if !config.http_addr.ip().is_loopback() {
                tracing::warn!(
                    http_addr = %config.http_addr,
                    "DUOVARSITY_PAYMENT_SANDBOX=on on a public address: anyone can pay for any course on the sandbox's page"
                );
            }
        }
        let api_url = match &config.razorpay_api_url {
            Some(url) => Some(url.clone()),
            None if with_gateway && config.payment_sandbox_enabled() => {
                let ip = match config.http_addr.ip() {
                    ip if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
                    ip => ip,
                };
                let base = format!(
                    "http://{}",
                    std::net::SocketAddr::new(ip, config.http_addr.port())
                );
                let key_secret = secret_or_file(
                    config.razorpay_key_secret.as_ref(),
                    &config.data_dir,
                    "razorpay-key-secret",
                )?;
                let webhook_secret = secret_or_file(
                    config.razorpay_webhook_secret.as_ref(),
                    &config.data_dir,
                    "razorpay-webhook-secret",
                )?;
                let key_id = config
                    .razorpay_key_id
                    .clone()
                    .unwrap_or_else(|| SANDBOX_KEY_ID.to_string());
                razorpay = Some(RazorpayKeys {
                    key_id: key_id.clone(),
                    key_secret: key_secret.clone(),
                    webhook_secret: webhook_secret.clone(),
                    checkout_page: Some(format!("{base}{}", crate::sandbox::CHECKOUT_PAGE)),
                });
                sandbox = Some(Sandbox::new(
                    key_id,
                    key_secret,
                    webhook_secret,
                    format!("{base}/v1/payments/webhooks/razorpay"),
                ));
                Some(format!("{base}{}", crate::sandbox::API_PREFIX))
            }
            None => None,
        };
        if let Some(base_url) = api_url {
            if razorpay.is_none() {
                // Validated: a real Razorpay comes with all three.
                let (Some(key_id), Some(key_secret), Some(webhook_secret)) = (
                    config.razorpay_key_id.clone(),
                    config.razorpay_key_secret.clone(),
                    config.razorpay_webhook_secret.clone(),
                ) else {
                    return Err(ProviderError::Rejected(
                        "DUOVARSITY_RAZORPAY_API_URL needs the key id and both secrets".into(),
                    )
                    .into());
                };
                razorpay = Some(RazorpayKeys {
                    key_id,
                    key_secret,
                    webhook_secret,
                    checkout_page: None,
                });
            }
            let keys = razorpay.as_ref().expect("set above");
            let client = Razorpay::new(RazorpaySettings {
                base_url,
                key_id: keys.key_id.clone(),
                key_secret: keys.key_secret.clone(),
                deadline: PROVIDER_DEADLINE,
            })?;
            clients.insert("razorpay", Arc::new(client));
        }
        if let Some(secret_key) = &config.stripe_secret_key {
            let client = Stripe::new(StripeSettings {
                base_url: config.stripe_api_url.clone(),
                secret_key: secret_key.clone(),
                deadline: PROVIDER_DEADLINE,
            })?;
            clients.insert("stripe", Arc::new(client));
        }
        let checkout = Some(config.payment_provider).filter(|provider| {
            clients.contains_key(match provider {
                PaymentProvider::Razorpay => "razorpay",
                PaymentProvider::Stripe => "stripe",
            })
        });
        Ok(Self {
            checkout,
            clients,
            razorpay,
            stripe_webhook_secret: config.stripe_webhook_secret.clone(),
            stripe_tolerance_secs: i64::try_from(config.stripe_webhook_tolerance_secs)
                .unwrap_or(300),
            sandbox,
        })
    }

    /// The provider that takes payments at checkout.
    /// The provider a new order uses: the one the `checkout-provider` flag names when this
    /// process has it configured (a flag naming one it lacks is logged and ignored, so a
    /// rollout never breaks checkout), else `DUOVARSITY_PAYMENT_PROVIDER`'s.
    pub fn checkout_for(&self, flagged: Option<&str>) -> Result<Arc<dyn Provider>, Error> {
        if let Some(name) = flagged {
            if let Some(provider) = self.clients.get(name) {
                return Ok(provider.clone());
            }
            tracing::warn!(
                provider = name,
                "checkout-provider names a provider that is not configured here; using the configured one"
            );
        }
        self.checkout()
    }

    pub fn checkout(&self) -> Result<Arc<dyn Provider>, Error> {
        let name = match self.checkout {
            Some(PaymentProvider::Razorpay) => "razorpay",
            Some(PaymentProvider::Stripe) => "stripe",
            None => {
                return Err(Error::FailedPrecondition {
                    reason: "PAYMENTS_NOT_CONFIGURED",
                    message: "no payment provider is configured: set DUOVARSITY_RAZORPAY_API_URL \
                              and its keys, or DUOVARSITY_STRIPE_SECRET_KEY (the built-in \
                              sandbox runs only in `duovarsity up`)"
                        .into(),
                });
            }
        };
        self.named(name)
    }

    /// The client of the provider an order was made with.
    pub fn named(&self, name: &str) -> Result<Arc<dyn Provider>, Error> {
        self.clients.get(name).cloned().ok_or_else(|| {
            Error::internal(
                "payment providers",
                &format!("an order of {name:?}, which is not configured here"),
            )
        })
    }
}

/// A provider's error as the service's: down is 503 with retry advice (nothing was
/// decided), refused is a failed precondition with the provider's words.
pub fn provider_error(error: ProviderError) -> Error {
    match error {
        ProviderError::Unavailable(detail) => {
            tracing::warn!(%detail, "payment provider unavailable");
            Error::Unavailable {
                message: "the payment provider is unavailable; nothing was charged, retry shortly"
                    .into(),
                retry_after: Some(Duration::from_secs(2)),
            }
        }
        ProviderError::Rejected(detail) => Error::FailedPrecondition {
            reason: "PAYMENT_PROVIDER_REFUSED",
            message: format!("the payment provider refused the request: {detail}"),
        },
    }
}
