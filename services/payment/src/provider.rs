//! What the payment service asks of a payment provider, whoever it is. Each provider is a
//! real HTTP client of its API with a configurable base URL (the platform's sandbox, a
//! test's mock server, or the provider itself), and every call has a deadline.
//!
//! Errors say what the caller may do: [`ProviderError::Unavailable`] (network, timeout,
//! 5xx, 429: retry later, nothing was decided) or [`ProviderError::Rejected`] (4xx: the
//! provider refused this request; retrying it unchanged will not help).

use async_trait::async_trait;

/// An order (Razorpay) or payment intent (Stripe) to create for one of our orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    /// Our order id: the provider's receipt or metadata, and the idempotency key sent to
    /// providers that take one, so a retried create never makes a second provider order.
    pub reference: String,
    /// Minor units.
    pub amount: i64,
    /// ISO 4217, upper case.
    pub currency: String,
}

/// The provider's side of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderOrder {
    pub id: String,
    /// What a client needs besides the id to pay (Stripe's client secret); none for
    /// Razorpay, whose checkout takes the order id and the public key id.
    pub client_secret: Option<String>,
}

/// Where the money of a provider order stands, as the provider reports it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Nothing paid yet (attempts may have failed).
    Open,
    /// Authorized but not captured.
    Authorized { payment_id: String },
    /// Paid: `amount` captured, of which the provider kept `fee`.
    Captured {
        payment_id: String,
        amount: i64,
        fee: i64,
    },
    /// Every attempt failed and the provider will take no more.
    Failed,
}

/// A refund the provider accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRefund {
    pub id: String,
    pub amount: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
    #[error("the payment provider refused the request: {0}")]
    Rejected(String),
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// `razorpay` or `stripe`: the name in orders, ledger accounts and metrics.
    fn name(&self) -> &'static str;

    async fn create_order(&self, request: &OrderRequest) -> Result<ProviderOrder, ProviderError>;

    /// Asks the provider about an order (reconciliation of missed webhooks).
    async fn settlement(&self, order_id: &str) -> Result<Settlement, ProviderError>;

    /// Refunds `amount` of a captured payment; `idempotency_key` makes a retried refund
    /// the same refund.
    async fn refund(
        &self,
        payment_id: &str,
        amount: i64,
        idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError>;
}

/// A provider's HTTP API: its base URL (the client appends `/v1/...`) and a client whose
/// every call has the deadline.
pub(crate) struct Api {
    base_url: String,
    pub(crate) http: reqwest::Client,
}

impl Api {
    pub(crate) fn new(
        base_url: &str,
        deadline: std::time::Duration,
    ) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .timeout(deadline)
            .build()
            .map_err(no_answer)?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            http,
        })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/v1{path}", self.base_url)
    }
}

/// Maps a transport error: no answer means nothing was decided.
pub(crate) fn no_answer(error: reqwest::Error) -> ProviderError {
    ProviderError::Unavailable(error.without_url().to_string())
}

/// The provider's own words in an error body: Razorpay's `{"error": {"description"}}` or
/// Stripe's `{"error": {"message"}}`.
fn describe(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Failure {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        #[serde(alias = "description")]
        message: String,
    }
    serde_json::from_slice::<Failure>(body)
        .ok()
        .map(|failure| failure.error.message)
}

/// Reads a provider's JSON answer: 2xx parsed, 429 and 5xx Unavailable, other 4xx Rejected
/// with the provider's own words from its error body.
pub(crate) async fn answer<T: serde::de::DeserializeOwned>(
    response: reqwest::Response,
) -> Result<T, ProviderError> {
    let status = response.status();
    let body = response.bytes().await.map_err(no_answer)?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|error| {
            ProviderError::Unavailable(format!("an unexpected answer ({error})"))
        });
    }
    let detail = describe(&body)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
    if status.as_u16() == 429 || status.is_server_error() {
        Err(ProviderError::Unavailable(format!("{status}: {detail}")))
    } else {
        Err(ProviderError::Rejected(format!("{status}: {detail}")))
    }
}
