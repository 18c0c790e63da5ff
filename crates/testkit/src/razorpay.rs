//! A Razorpay API of a test's own, on a free port of 127.0.0.1: the Orders, Payments and
//! Refunds endpoints the payment service calls, with Razorpay's basic auth, error bodies
//! and signatures, and controls a test uses to play the learner (pay or fail an order)
//! and to take the API down. Signatures are computed here with `ring`, independently of
//! the service's own code.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// Razorpay's fee on a captured payment, in basis points (2 %).
pub const FEE_BPS: i64 = 200;

pub struct MockRazorpay {
    server: crate::MockServer,
    state: Arc<Mutex<Books>>,
    pub key_id: String,
    pub key_secret: String,
    pub webhook_secret: String,
}

#[derive(Default)]
struct Books {
    key_id: String,
    key_secret: String,
    orders: BTreeMap<String, Value>,
    /// order id -> its payments
    payments: BTreeMap<String, Vec<Value>>,
    /// payment id -> amount refunded
    refunded: HashMap<String, i64>,
    calls: HashMap<&'static str, usize>,
    down: bool,
    next: u64,
}

impl Books {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}_{:014X}", self.next)
    }
}

/// What Razorpay's checkout hands the client after a payment, and the webhook it sends.
#[derive(Debug, Clone)]
pub struct Paid {
    pub payment_id: String,
    /// `razorpay_signature`: HMAC of `order_id|payment_id` with the key secret.
    pub signature: String,
    pub webhook: Webhook,
}

/// A webhook delivery as Razorpay makes it.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub body: Vec<u8>,
    /// `X-Razorpay-Signature`: HMAC of the body with the webhook secret.
    pub signature: String,
    /// `X-Razorpay-Event-Id`.
    pub event_id: String,
}

fn hmac_hex(secret: &str, message: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    hex::encode(ring::hmac::sign(&key, message).as_ref())
}

fn error(status: StatusCode, description: &str) -> Response {
    let body = json!({"error": {"code": "BAD_REQUEST_ERROR", "description": description}});
    (status, Json(body)).into_response()
}

type Shared = Arc<Mutex<Books>>;

/// Counts the call; the refusal if the API is down or the credentials are wrong.
fn refusal(books: &Shared, endpoint: &'static str, headers: &HeaderMap) -> Option<Response> {
    use base64::Engine as _;
    let mut books = books.lock().expect("mock razorpay lock");
    *books.calls.entry(endpoint).or_default() += 1;
    if books.down {
        return Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service unavailable",
        ));
    }
    let expected = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", books.key_id, books.key_secret));
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    (given != Some(expected.as_str()))
        .then(|| error(StatusCode::UNAUTHORIZED, "Authentication failed"))
}

async fn create_order(
    State(books): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = refusal(&books, "create_order", &headers) {
        return refused;
    }
    let Some(amount) = body["amount"].as_i64().filter(|a| *a >= 100) else {
        return error(
            StatusCode::BAD_REQUEST,
            "The amount must be atleast INR 1.00",
        );
    };
    let currency = body["currency"].as_str().unwrap_or_default();
    if currency.len() != 3 {
        return error(StatusCode::BAD_REQUEST, "The currency provided is invalid");
    }
    let mut books = books.lock().expect("mock razorpay lock");
    let id = books.id("order");
    let order = json!({
        "id": id, "entity": "order", "amount": amount, "amount_paid": 0,
        "amount_due": amount, "currency": currency, "receipt": body["receipt"],
        "notes": body["notes"], "status": "created", "attempts": 0,
    });
    books.orders.insert(id, order.clone());
    Json(order).into_response()
}

async fn order_payments(
    State(books): State<Shared>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
) -> Response {
    if let Some(refused) = refusal(&books, "order_payments", &headers) {
        return refused;
    }
    let books = books.lock().expect("mock razorpay lock");
    if !books.orders.contains_key(&order_id) {
        return error(StatusCode::BAD_REQUEST, "The id provided does not exist");
    }
    let items = books.payments.get(&order_id).cloned().unwrap_or_default();
    Json(json!({"entity": "collection", "count": items.len(), "items": items})).into_response()
}

async fn refund(
    State(books): State<Shared>,
    headers: HeaderMap,
    Path(payment_id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = refusal(&books, "refund", &headers) {
        return refused;
    }
    let mut books = books.lock().expect("mock razorpay lock");
    let captured = books
        .payments
        .values()
        .flatten()
        .find(|p| p["id"] == payment_id.as_str() && p["status"] == "captured")
        .and_then(|p| p["amount"].as_i64());
    let Some(captured) = captured else {
        return error(StatusCode::BAD_REQUEST, "The id provided does not exist");
    };
    let already = books.refunded.get(&payment_id).copied().unwrap_or(0);
    let amount = body["amount"].as_i64().unwrap_or(captured - already);
    if amount <= 0 || amount > captured - already {
        return error(
            StatusCode::BAD_REQUEST,
            "The refund amount provided is greater than amount captured",
        );
    }
    books.refunded.insert(payment_id.clone(), already + amount);
    let id = books.id("rfnd");
    Json(json!({"id": id, "entity": "refund", "amount": amount, "payment_id": payment_id, "status": "processed"}))
        .into_response()
}

impl MockRazorpay {
    pub async fn start() -> Self {
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let key_id = format!("rzp_test_{}", &suffix[..14]);
        let key_secret = format!("secret_{suffix}");
        let state = Arc::new(Mutex::new(Books {
            key_id: key_id.clone(),
            key_secret: key_secret.clone(),
            ..Books::default()
        }));
        let router = Router::new()
            .route("/v1/orders", post(create_order))
            .route("/v1/orders/{id}/payments", get(order_payments))
            .route("/v1/payments/{id}/refund", post(refund))
            .with_state(state.clone());
        Self {
            server: crate::MockServer::serve(router).await,
            state,
            key_id,
            key_secret,
            webhook_secret: format!("whsec_{suffix}"),
        }
    }

    /// The base URL to configure (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// How many calls an endpoint (`create_order`, `order_payments`, `refund`) received.
    pub fn calls(&self, endpoint: &str) -> usize {
        let books = self.state.lock().expect("mock razorpay lock");
        books.calls.get(endpoint).copied().unwrap_or(0)
    }

    /// While down, every call answers 503.
    pub fn set_down(&self, down: bool) {
        self.state.lock().expect("mock razorpay lock").down = down;
    }

    /// The order as the API holds it.
    pub fn order(&self, order_id: &str) -> Option<Value> {
        let books = self.state.lock().expect("mock razorpay lock");
        books.orders.get(order_id).cloned()
    }

    /// The learner pays `order_id` in full at checkout; the payment is captured.
    pub fn pay(&self, order_id: &str) -> Paid {
        let mut books = self.state.lock().expect("mock razorpay lock");
        let order = books
            .orders
            .get(order_id)
            .expect("an order of this mock")
            .clone();
        let amount = order["amount"].as_i64().expect("an amount");
        let payment_id = books.id("pay");
        let payment = json!({
            "id": payment_id, "entity": "payment", "amount": amount,
            "currency": order["currency"], "status": "captured", "order_id": order_id,
            "fee": amount * FEE_BPS / 10_000, "captured": true,
        });
        books
            .payments
            .entry(order_id.to_string())
            .or_default()
            .push(payment.clone());
        if let Some(stored) = books.orders.get_mut(order_id) {
            stored["status"] = json!("paid");
            stored["amount_paid"] = json!(amount);
            stored["amount_due"] = json!(0);
        }
        let event_id = books.id("evt");
        drop(books);
        Paid {
            signature: hmac_hex(
                &self.key_secret,
                format!("{order_id}|{payment_id}").as_bytes(),
            ),
            payment_id,
            webhook: self.webhook("payment.captured", payment, event_id),
        }
    }

    /// An attempt to pay `order_id` fails (the order stays payable).
    pub fn fail(&self, order_id: &str) -> Webhook {
        let mut books = self.state.lock().expect("mock razorpay lock");
        let order = books
            .orders
            .get(order_id)
            .expect("an order of this mock")
            .clone();
        let payment_id = books.id("pay");
        let payment = json!({
            "id": payment_id, "entity": "payment", "amount": order["amount"],
            "currency": order["currency"], "status": "failed", "order_id": order_id,
            "error_code": "BAD_REQUEST_ERROR", "error_description": "Payment failed",
        });
        books
            .payments
            .entry(order_id.to_string())
            .or_default()
            .push(payment.clone());
        let event_id = books.id("evt");
        drop(books);
        self.webhook("payment.failed", payment, event_id)
    }

    fn webhook(&self, event: &str, payment: Value, event_id: String) -> Webhook {
        let body = serde_json::to_vec(&json!({
            "entity": "event", "account_id": "acc_test", "event": event,
            "contains": ["payment"], "payload": {"payment": {"entity": payment}},
        }))
        .expect("JSON");
        Webhook {
            signature: hmac_hex(&self.webhook_secret, &body),
            body,
            event_id,
        }
    }
}
