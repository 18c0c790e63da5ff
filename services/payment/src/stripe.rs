//! Stripe's REST API (PaymentIntents, Refunds): form-encoded requests with the secret key
//! as a bearer token, and an `Idempotency-Key` on every create, so a retried call is the
//! same call to Stripe. The base URL is configurable (`https://api.stripe.com` in
//! production, a mock server in tests).

use std::time::Duration;

use async_trait::async_trait;
use duovarsity_common::secret::Secret;
use serde::Deserialize;

use crate::provider::{
    Api, OrderRequest, Provider, ProviderError, ProviderOrder, ProviderRefund, Settlement, answer,
    no_answer,
};

/// Where and as whom to call Stripe.
#[derive(Debug, Clone)]
pub struct StripeSettings {
    /// For example `https://api.stripe.com` (the client appends `/v1/...`).
    pub base_url: String,
    pub secret_key: Secret<String>,
    /// The longest one call may take.
    pub deadline: Duration,
}

pub struct Stripe {
    settings: StripeSettings,
    api: Api,
}

#[derive(Deserialize)]
struct PaymentIntent {
    id: String,
    status: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    amount_received: i64,
    #[serde(default)]
    latest_charge: Option<Charge>,
}

#[derive(Deserialize)]
struct Charge {
    #[serde(default)]
    balance_transaction: Option<BalanceTransaction>,
}

#[derive(Deserialize)]
struct BalanceTransaction {
    fee: i64,
}

#[derive(Deserialize)]
struct Refund {
    id: String,
    amount: i64,
}

impl Stripe {
    pub fn new(settings: StripeSettings) -> Result<Self, ProviderError> {
        let api = Api::new(&settings.base_url, settings.deadline)?;
        Ok(Self { settings, api })
    }

    /// A form-encoded POST with an idempotency key.
    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: &str,
    ) -> Result<T, ProviderError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let response = self
            .api
            .http
            .post(self.api.url(path))
            .bearer_auth(self.settings.secret_key.expose())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("idempotency-key", idempotency_key)
            .body(body)
            .send()
            .await
            .map_err(no_answer)?;
        answer(response).await
    }
}

#[async_trait]
impl Provider for Stripe {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create_order(&self, request: &OrderRequest) -> Result<ProviderOrder, ProviderError> {
        let form = [
            ("amount", request.amount.to_string()),
            ("currency", request.currency.to_lowercase()),
            ("metadata[duovarsity_order]", request.reference.clone()),
            ("automatic_payment_methods[enabled]", "true".to_string()),
        ];
        let key = format!("order-{}", request.reference);
        let intent: PaymentIntent = self.post("/payment_intents", &form, &key).await?;
        let client_secret = intent.client_secret.ok_or_else(|| {
            ProviderError::Unavailable("a payment intent without a client secret".to_string())
        })?;
        Ok(ProviderOrder {
            id: intent.id,
            client_secret: Some(client_secret),
        })
    }

    async fn settlement(&self, order_id: &str) -> Result<Settlement, ProviderError> {
        let response = self
            .api
            .http
            .get(self.api.url(&format!("/payment_intents/{order_id}")))
            .query(&[("expand[]", "latest_charge.balance_transaction")])
            .bearer_auth(self.settings.secret_key.expose())
            .send()
            .await
            .map_err(no_answer)?;
        let intent: PaymentIntent = answer(response).await?;
        Ok(match intent.status.as_str() {
            "succeeded" => Settlement::Captured {
                fee: intent
                    .latest_charge
                    .and_then(|charge| charge.balance_transaction)
                    .map_or(0, |transaction| transaction.fee),
                payment_id: intent.id,
                amount: intent.amount_received,
            },
            "requires_capture" => Settlement::Authorized {
                payment_id: intent.id,
            },
            "canceled" => Settlement::Failed,
            "requires_payment_method"
            | "requires_confirmation"
            | "requires_action"
            | "processing" => Settlement::Open,
            other => {
                return Err(ProviderError::Unavailable(format!(
                    "a payment intent in an unknown status {other:?}"
                )));
            }
        })
    }

    /// `payment_id` is the payment intent's id.
    async fn refund(
        &self,
        payment_id: &str,
        amount: i64,
        idempotency_key: &str,
    ) -> Result<ProviderRefund, ProviderError> {
        let form = [
            ("payment_intent", payment_id.to_string()),
            ("amount", amount.to_string()),
        ];
        let refund: Refund = self.post("/refunds", &form, idempotency_key).await?;
        Ok(ProviderRefund {
            id: refund.id,
            amount: refund.amount,
        })
    }
}
