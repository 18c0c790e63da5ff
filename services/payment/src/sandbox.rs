//! The built-in Razorpay sandbox: what Razorpay's test mode does, served by the platform
//! itself on the gateway's listener, so `duovarsity up` takes a paid enrollment end to
//! end with no account anywhere.
//!
//! - The API under [`API_PREFIX`] speaks Razorpay's wire format with its basic auth:
//!   `POST /v1/orders`, `GET /v1/orders/{id}/payments`, `POST /v1/payments/{id}/refund`.
//!   The payment service's Razorpay client talks to it over HTTP exactly as it talks to
//!   Razorpay.
//! - A hosted checkout page at [`CHECKOUT_PAGE`]`{order_id}` lets a person pay or fail an
//!   order in a browser (or with curl). Paying answers what Razorpay Checkout hands a
//!   client (`razorpay_payment_id`, `razorpay_order_id`, `razorpay_signature`).
//! - Every payment and refund is announced by a signed webhook (`X-Razorpay-Signature`,
//!   `X-Razorpay-Event-Id`) sent to the platform's webhook endpoint, retried with backoff
//!   like Razorpay retries, until it is acknowledged.
//!
//! The sandbox keeps its books in memory: a restart forgets its orders (the payment
//! service's reconciliation then finds nothing paid, and the orders expire), which is
//! what a sandbox may do and a real provider may not.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use duovarsity_common::backoff::Backoff;
use duovarsity_common::secret::Secret;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::signature::sign;
use api::{create_order, order_payments, refund};
use checkout::{checkout_page, fail, pay};

mod api;
mod checkout;

/// Where the sandbox's Razorpay API is served (the client appends `/v1/...`).
pub const API_PREFIX: &str = "/sandbox/razorpay";
/// The hosted checkout page, followed by a Razorpay order id.
pub const CHECKOUT_PAGE: &str = "/sandbox/checkout/";
/// What the sandbox keeps of a payment as its fee, in basis points (Razorpay's 2 %).
pub const FEE_BPS: i64 = 200;
/// Webhook deliveries per event before the sandbox gives up (Razorpay retries for a day;
/// the reconciliation job covers what is never delivered).
const DELIVERIES: u32 = 6;

#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

struct Inner {
    key_id: String,
    key_secret: Secret<String>,
    webhook_secret: Secret<String>,
    webhook_url: String,
    http: reqwest::Client,
    books: Mutex<Books>,
}

#[derive(Default)]
struct Books {
    orders: HashMap<String, SandboxOrder>,
    payments: HashMap<String, SandboxPayment>,
}

struct SandboxOrder {
    amount: i64,
    currency: String,
    receipt: String,
    created_at: i64,
    payments: Vec<String>,
}

#[derive(Clone)]
struct SandboxPayment {
    id: String,
    order_id: String,
    amount: i64,
    currency: String,
    status: &'static str,
    fee: i64,
    refunded: i64,
    created_at: i64,
}

impl SandboxPayment {
    fn entity(&self) -> Value {
        json!({
            "id": self.id,
            "entity": "payment",
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status,
            "order_id": self.order_id,
            "method": "card",
            "captured": self.status == "captured",
            "amount_refunded": self.refunded,
            "fee": self.fee,
            "tax": 0,
            "created_at": self.created_at,
        })
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An id as Razorpay makes them: a prefix and 14 characters.
fn new_id(prefix: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}_{}", &id[id.len() - 14..])
}

/// Razorpay's error body.
fn refusal(status: StatusCode, description: &str) -> Response {
    let body = json!({"error": {"code": "BAD_REQUEST_ERROR", "description": description}});
    (status, axum::Json(body)).into_response()
}

#[derive(Deserialize)]
struct NewOrder {
    amount: i64,
    currency: String,
    #[serde(default)]
    receipt: String,
}

#[derive(Deserialize)]
struct NewRefund {
    #[serde(default)]
    amount: Option<i64>,
}

impl Sandbox {
    pub fn new(
        key_id: String,
        key_secret: Secret<String>,
        webhook_secret: Secret<String>,
        webhook_url: String,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                key_id,
                key_secret,
                webhook_secret,
                webhook_url,
                http,
                books: Mutex::new(Books::default()),
            }),
        }
    }

    /// The API and the checkout pages, to be served on the gateway's listener.
    pub fn router(&self) -> Router {
        Router::new()
            .route(&format!("{API_PREFIX}/v1/orders"), post(create_order))
            .route(
                &format!("{API_PREFIX}/v1/orders/{{id}}/payments"),
                get(order_payments),
            )
            .route(
                &format!("{API_PREFIX}/v1/payments/{{id}}/refund"),
                post(refund),
            )
            .route(&format!("{CHECKOUT_PAGE}{{id}}"), get(checkout_page))
            .route(&format!("{CHECKOUT_PAGE}{{id}}/pay"), post(pay))
            .route(&format!("{CHECKOUT_PAGE}{{id}}/fail"), post(fail))
            .with_state(self.clone())
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.inner
            .books
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the request carries the key id and secret (Razorpay's basic auth).
    fn authorized(&self, headers: &HeaderMap) -> bool {
        use base64::Engine as _;
        let expected = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            self.inner.key_id,
            self.inner.key_secret.expose()
        ));
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "));
        // Compared as HMAC tags, so the comparison takes the same time wherever they differ.
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"sandbox basic auth");
        let tag = ring::hmac::sign(&key, expected.as_bytes());
        given.is_some_and(|given| ring::hmac::verify(&key, given.as_bytes(), tag.as_ref()).is_ok())
    }

    /// Sends a webhook as Razorpay does, in the background, retrying with backoff until
    /// the platform acknowledges it with a 2xx.
    fn announce(&self, event: &str, payload: Value) {
        let body = json!({
            "entity": "event",
            "account_id": "acc_duovarsity_sandbox",
            "event": event,
            "contains": payload.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
            "payload": payload,
            "created_at": unix_now(),
        })
        .to_string();
        let signature = sign(
            self.inner.webhook_secret.expose().as_bytes(),
            body.as_bytes(),
        );
        let event_id = new_id("evt");
        let inner = self.inner.clone();
        let event = event.to_string();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
            for attempt in 1..=DELIVERIES {
                let sent = inner
                    .http
                    .post(&inner.webhook_url)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header("X-Razorpay-Signature", &signature)
                    .header("X-Razorpay-Event-Id", &event_id)
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(answer) if answer.status().is_success() => return,
                    Ok(answer) => {
                        tracing::warn!(%event, attempt, status = %answer.status(), "sandbox webhook refused")
                    }
                    Err(error) => {
                        tracing::warn!(%event, attempt, %error, "sandbox webhook not delivered")
                    }
                }
                backoff.wait().await;
            }
        });
    }

    /// Settles an order with a new payment: captured (`pay`) or failed.
    fn attempt(
        &self,
        order_id: &str,
        pay: bool,
    ) -> Result<SandboxPayment, (StatusCode, &'static str)> {
        let payment = {
            let mut books = self.books();
            let Some(order) = books.orders.get_mut(order_id) else {
                return Err((StatusCode::NOT_FOUND, "The id provided does not exist"));
            };
            let payment = SandboxPayment {
                id: new_id("pay"),
                order_id: order_id.to_string(),
                amount: order.amount,
                currency: order.currency.clone(),
                status: if pay { "captured" } else { "failed" },
                fee: if pay {
                    order.amount * FEE_BPS / 10_000
                } else {
                    0
                },
                refunded: 0,
                created_at: unix_now(),
            };
            if pay
                && books.orders[order_id].payments.iter().any(|id| {
                    books
                        .payments
                        .get(id)
                        .is_some_and(|p| p.status == "captured")
                })
            {
                return Err((StatusCode::BAD_REQUEST, "Order has already been paid"));
            }
            books
                .orders
                .get_mut(order_id)
                .expect("looked up above")
                .payments
                .push(payment.id.clone());
            books.payments.insert(payment.id.clone(), payment.clone());
            payment
        };
        let entity = json!({"payment": {"entity": payment.entity()}});
        if pay {
            let mut authorized = payment.entity();
            authorized["status"] = json!("authorized");
            authorized["captured"] = json!(false);
            self.announce(
                "payment.authorized",
                json!({"payment": {"entity": authorized}}),
            );
            self.announce("payment.captured", entity);
        } else {
            self.announce("payment.failed", entity);
        }
        Ok(payment)
    }
}
