//! A Stripe API of a test's own, on a free port of 127.0.0.1: the PaymentIntents and
//! Refunds endpoints the payment service calls, with Stripe's bearer auth, form-encoded
//! requests, error bodies and idempotency keys (the same key replays the first response;
//! the same key with other parameters is refused), and controls a test uses to play the
//! learner (a payment succeeds) and to take the API down. Webhooks are signed as Stripe
//! signs them (`Stripe-Signature: t=…,v1=…`), with `ring`, independently of the service.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// Stripe's fee on a charge: 2.9 % + 30 minor units.
pub fn fee(amount: i64) -> i64 {
    amount * 29 / 1000 + 30
}

pub struct MockStripe {
    server: crate::MockServer,
    state: Arc<Mutex<Books>>,
    pub secret_key: String,
    pub webhook_secret: String,
}

#[derive(Default)]
struct Books {
    secret_key: String,
    intents: BTreeMap<String, Value>,
    /// payment intent id -> amount refunded
    refunded: HashMap<String, i64>,
    /// idempotency key -> (the request it was first used with, the stored answer)
    idempotent: HashMap<String, (String, u16, Value)>,
    calls: HashMap<&'static str, usize>,
    down: bool,
    next: u64,
}

impl Books {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}_{:024}", self.next)
    }
}

/// A webhook delivery as Stripe makes it.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub body: Vec<u8>,
    /// `Stripe-Signature`.
    pub signature: String,
    pub event_id: String,
}

fn error(status: StatusCode, kind: &str, message: &str) -> (u16, Value) {
    (
        status.as_u16(),
        json!({"error": {"type": kind, "message": message}}),
    )
}

type Shared = Arc<Mutex<Books>>;

/// Runs `handle` as Stripe would: counted, authenticated, and once per idempotency key.
fn serve(
    books: &Shared,
    endpoint: &'static str,
    headers: &HeaderMap,
    request: &str,
    handle: impl FnOnce(&mut Books) -> (u16, Value),
) -> Response {
    let mut books = books.lock().expect("mock stripe lock");
    *books.calls.entry(endpoint).or_default() += 1;
    let (status, body) = if books.down {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "Stripe is down",
        )
    } else if headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        != Some(books.secret_key.as_str())
    {
        error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            "Invalid API Key provided",
        )
    } else {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(|key| format!("{endpoint}:{key}"));
        match key.as_ref().and_then(|key| books.idempotent.get(key)) {
            Some((first, status, body)) if first == request => (*status, body.clone()),
            Some(_) => error(
                StatusCode::BAD_REQUEST,
                "idempotency_error",
                "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            ),
            None => {
                let (status, body) = handle(&mut books);
                if let Some(key) = key {
                    books
                        .idempotent
                        .insert(key, (request.to_string(), status, body.clone()));
                }
                (status, body)
            }
        }
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

async fn create_intent(State(books): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let request = String::from_utf8_lossy(&body).into_owned();
    let params = form(&body);
    serve(&books, "create_intent", &headers, &request, |books| {
        let Some(amount) = params
            .get("amount")
            .and_then(|a| a.parse::<i64>().ok())
            .filter(|a| *a >= 50)
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "Amount must be at least 50 cents",
            );
        };
        let id = books.id("pi");
        let intent = json!({
            "id": id, "object": "payment_intent", "amount": amount, "amount_received": 0,
            "currency": params.get("currency"), "status": "requires_payment_method",
            "client_secret": format!("{id}_secret_{}", books.next),
            "metadata": {"duovarsity_order": params.get("metadata[duovarsity_order]")},
            "latest_charge": null,
        });
        books.intents.insert(id, intent.clone());
        (200, intent)
    })
}

async fn get_intent(
    State(books): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    // As Stripe: `latest_charge` is an id unless expanded with its balance transaction.
    let expanded = form(query.unwrap_or_default().as_bytes())
        .get("expand[]")
        .is_some_and(|field| field == "latest_charge.balance_transaction");
    serve(&books, "get_intent", &headers, "", |books| {
        match books.intents.get(&id) {
            Some(intent) => {
                let mut intent = intent.clone();
                if !expanded && !intent["latest_charge"].is_null() {
                    intent["latest_charge"] = intent["latest_charge"]["id"].clone();
                }
                (200, intent)
            }
            None => error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                &format!("No such payment_intent: '{id}'"),
            ),
        }
    })
}

async fn create_refund(State(books): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let request = String::from_utf8_lossy(&body).into_owned();
    let params = form(&body);
    serve(&books, "create_refund", &headers, &request, |books| {
        let intent_id = params.get("payment_intent").cloned().unwrap_or_default();
        let Some(received) = books
            .intents
            .get(&intent_id)
            .filter(|intent| intent["status"] == "succeeded")
            .and_then(|intent| intent["amount_received"].as_i64())
        else {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "This PaymentIntent does not have a successful charge to refund.",
            );
        };
        let already = books.refunded.get(&intent_id).copied().unwrap_or(0);
        let amount = params
            .get("amount")
            .and_then(|a| a.parse::<i64>().ok())
            .unwrap_or(received - already);
        if amount <= 0 || amount > received - already {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "Refund amount is greater than unrefunded amount on charge",
            );
        }
        books.refunded.insert(intent_id.clone(), already + amount);
        let id = books.id("re");
        (
            200,
            json!({"id": id, "object": "refund", "amount": amount, "payment_intent": intent_id, "status": "succeeded"}),
        )
    })
}

impl MockStripe {
    pub async fn start() -> Self {
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let secret_key = format!("sk_test_{suffix}");
        let state = Arc::new(Mutex::new(Books {
            secret_key: secret_key.clone(),
            ..Books::default()
        }));
        let router = Router::new()
            .route("/v1/payment_intents", post(create_intent))
            .route("/v1/payment_intents/{id}", get(get_intent))
            .route("/v1/refunds", post(create_refund))
            .with_state(state.clone());
        Self {
            server: crate::MockServer::serve(router).await,
            state,
            secret_key,
            webhook_secret: format!("whsec_{suffix}"),
        }
    }

    /// The base URL to configure (`http://127.0.0.1:PORT`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Calls an endpoint (`create_intent`, `get_intent`, `create_refund`) received,
    /// replays of an idempotency key included.
    pub fn calls(&self, endpoint: &str) -> usize {
        let books = self.state.lock().expect("mock stripe lock");
        books.calls.get(endpoint).copied().unwrap_or(0)
    }

    /// Payment intents created (replays of an idempotency key create none).
    pub fn intents(&self) -> usize {
        self.state.lock().expect("mock stripe lock").intents.len()
    }

    /// While down, every call answers 503.
    pub fn set_down(&self, down: bool) {
        self.state.lock().expect("mock stripe lock").down = down;
    }

    /// The learner's payment of `intent_id` succeeds; the `payment_intent.succeeded`
    /// webhook Stripe sends, signed at `timestamp` (unix seconds).
    pub fn succeed(&self, intent_id: &str, timestamp: i64) -> Webhook {
        let mut books = self.state.lock().expect("mock stripe lock");
        let charge = books.id("ch");
        let event_id = books.id("evt");
        let intent = books
            .intents
            .get_mut(intent_id)
            .expect("an intent of this mock");
        let amount = intent["amount"].as_i64().expect("an amount");
        intent["status"] = json!("succeeded");
        intent["amount_received"] = json!(amount);
        intent["latest_charge"] =
            json!({"id": charge, "balance_transaction": {"fee": fee(amount)}});
        // In events, as in unexpanded API answers, the charge is its id.
        let mut intent = intent.clone();
        intent["latest_charge"] = json!(charge);
        drop(books);
        let body = serde_json::to_vec(&json!({
            "id": event_id, "object": "event", "type": "payment_intent.succeeded",
            "created": timestamp, "data": {"object": intent},
        }))
        .expect("JSON");
        let mut signed = format!("{timestamp}.").into_bytes();
        signed.extend_from_slice(&body);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.webhook_secret.as_bytes());
        let v1 = hex::encode(ring::hmac::sign(&key, &signed).as_ref());
        Webhook {
            body,
            signature: format!("t={timestamp},v1={v1}"),
            event_id,
        }
    }
}
