//! Razorpay's REST API (Orders, Payments, Refunds) over HTTP basic auth with the key id
//! and key secret. The base URL is configurable: `https://api.razorpay.com` in
//! production, the platform's sandbox in embedded mode, a mock server in tests.

use std::time::Duration;

use async_trait::async_trait;
use duovarsity_common::secret::Secret;
use serde::Deserialize;
use serde_json::json;

use crate::provider::{
    Api, OrderRequest, Provider, ProviderError, ProviderOrder, ProviderRefund, Settlement, answer,
    no_answer,
};

/// Where and as whom to call Razorpay.
#[derive(Debug, Clone)]
pub struct RazorpaySettings {
    /// For example `https://api.razorpay.com` (the client appends `/v1/...`).
    pub base_url: String,
    pub key_id: String,
    pub key_secret: Secret<String>,
    /// The longest one call may take.
    pub deadline: Duration,
}

pub struct Razorpay {
    settings: RazorpaySettings,
    api: Api,
}

#[derive(Deserialize)]
struct Order {
    id: String,
}

#[derive(Deserialize)]
struct Payments {
    items: Vec<Payment>,
}

#[derive(Deserialize)]
struct Payment {
    id: String,
    status: String,
    amount: i64,
    #[serde(default)]
    fee: Option<i64>,
}

#[derive(Deserialize)]
struct Refund {
    id: String,
    amount: i64,
}

impl Razorpay {
    pub fn new(settings: RazorpaySettings) -> Result<Self, ProviderError> {
        let api = Api::new(&settings.base_url, settings.deadline)?;
        Ok(Self { settings, api })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.api
            .http
            .request(method, self.api.url(path))
            .basic_auth(
                &self.settings.key_id,
                Some(self.settings.key_secret.expose()),
            )
    }
}

#[async_trait]
impl Provider for Razorpay {
    fn name(&self) -> &'static str {
        "razorpay"
    }

    async fn create_order(&self, request: &OrderRequest) -> Result<ProviderOrder, ProviderError> {
        // Razorpay's Orders API takes no idempotency key; the receipt carries our order id
        // and the service creates a provider order only once per order.
        let body = json!({
            "amount": request.amount,
            "currency": request.currency,
            "receipt": request.reference,
            "notes": {"duovarsity_order": request.reference},
        });
        let response = self
            .request(reqwest::Method::POST, "/orders")
            .json(&body)
            .send()
            .await
            .map_err(no_answer)?;
        let order: Order = answer(response).await?;
        Ok(ProviderOrder {
            id: order.id,
            client_secret: None,
        })
    }

    async fn settlement(&self, order_id: &str) -> Result<Settlement, ProviderError> {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("/orders/{order_id}/payments"),
            )
            .send()
            .await
            .map_err(no_answer)?;
        let payments: Payments = answer(response).await?;
        // One captured payment settles the order; otherwise an authorized one is next best.
        if let Some(paid) = payments.items.iter().find(|p| p.status == "captured") {
            return Ok(Settlement::Captured {
                payment_id: paid.id.clone(),
                amount: paid.amount,
                fee: paid.fee.unwrap_or(0),
            });
        }
        if let Some(authorized) = payments.items.iter().find(|p| p.status == "authorized") {
            return Ok(Settlement::Authorized {
                payment_id: authorized.id.clone(),
            });
        }
        // Razorpay lets a learner retry a failed payment on the same order: still open.
        Ok(Settlement::Open)
    }

    async fn refund(
        &self,
        payment_id: &str,
        amount: i64,
        idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError> {
        let body = json!({
            "amount": amount,
            "receipt": idempotency_key,
            "notes": {"duovarsity_refund": idempotency_key},
        });
        let response = self
            .request(
                reqwest::Method::POST,
                &format!("/payments/{payment_id}/refund"),
            )
            .json(&body)
            .send()
            .await
            .map_err(no_answer)?;
        let refund: Refund = answer(response).await?;
        Ok(ProviderRefund {
            id: refund.id,
            amount: refund.amount,
        })
    }
}
