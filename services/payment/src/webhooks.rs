//! Provider webhooks to [`ProviderEvent`]s: the signature is checked over the raw body
//! first (a bad one changes nothing), then the body is read. Events that do not concern
//! an order's money are acknowledged and ignored (`Ok(None)`), so the provider stops
//! retrying them.
//!
//! - Razorpay: `X-Razorpay-Signature` (HMAC of the body), `X-Razorpay-Event-Id` for
//!   deduplication; `payment.authorized`, `payment.captured`, `payment.failed`,
//!   `refund.processed`.
//! - Stripe: `Stripe-Signature` (with its replay window); the event's `id`;
//!   `payment_intent.amount_capturable_updated` (authorized), `payment_intent.succeeded`,
//!   `payment_intent.payment_failed`, and `refund.created`/`refund.updated` once the
//!   refund's status is `succeeded`. Stripe's event carries the charge as an id, not its
//!   fee, so a capture's fee is read from the API before posting ([`Notice::fee_known`]).

use serde_json::Value;

use crate::orders::{EventKind, ProviderEvent};
use crate::signature::{self, SignatureError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Signature(#[from] SignatureError),
    #[error("the webhook body is not what the provider sends: {0}")]
    Body(String),
}

/// A webhook's event, and whether everything it needs is in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub event: ProviderEvent,
    /// False for a Stripe capture whose fee must be read from the API before posting.
    pub fee_known: bool,
}

fn text(value: &Value, what: &str) -> Result<String, WebhookError> {
    value
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| WebhookError::Body(format!("no {what}")))
}

fn amount(value: &Value, what: &str) -> Result<i64, WebhookError> {
    value
        .as_i64()
        .ok_or_else(|| WebhookError::Body(format!("no {what}")))
}

/// A Razorpay webhook: `body` as received, with its signature and event id headers.
pub fn razorpay(
    webhook_secret: &[u8],
    body: &[u8],
    signature_header: &str,
    event_id: &str,
) -> Result<Option<Notice>, WebhookError> {
    signature::verify_razorpay_webhook(webhook_secret, body, signature_header)?;
    let body: Value =
        serde_json::from_slice(body).map_err(|error| WebhookError::Body(error.to_string()))?;
    let payment = &body["payload"]["payment"]["entity"];
    let kind = match body["event"].as_str().unwrap_or_default() {
        "payment.authorized" => EventKind::Authorized {
            payment_id: text(&payment["id"], "payment id")?,
        },
        "payment.captured" => EventKind::Captured {
            payment_id: text(&payment["id"], "payment id")?,
            amount: amount(&payment["amount"], "amount")?,
            fee: payment["fee"].as_i64().unwrap_or(0),
        },
        "payment.failed" => EventKind::AttemptFailed,
        "refund.processed" => {
            let refund = &body["payload"]["refund"]["entity"];
            EventKind::Refunded {
                refund_id: text(&refund["id"], "refund id")?,
                amount: amount(&refund["amount"], "refund amount")?,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(Notice {
        event: ProviderEvent {
            provider: "razorpay".to_string(),
            event_id: event_id.to_string(),
            provider_order_id: text(&payment["order_id"], "order id")?,
            kind,
        },
        fee_known: true,
    }))
}

/// A Stripe webhook: `body` as received with its `Stripe-Signature`, at `now` (unix
/// seconds), accepted within `tolerance_secs`.
pub fn stripe(
    endpoint_secret: &[u8],
    body: &[u8],
    signature_header: &str,
    now: i64,
    tolerance_secs: i64,
) -> Result<Option<Notice>, WebhookError> {
    signature::verify_stripe_webhook(endpoint_secret, body, signature_header, now, tolerance_secs)?;
    let body: Value =
        serde_json::from_slice(body).map_err(|error| WebhookError::Body(error.to_string()))?;
    let object = &body["data"]["object"];
    let mut fee_known = true;
    let (intent, kind) = match body["type"].as_str().unwrap_or_default() {
        "payment_intent.amount_capturable_updated" => (
            text(&object["id"], "payment intent id")?,
            EventKind::Authorized {
                payment_id: text(&object["id"], "payment intent id")?,
            },
        ),
        "payment_intent.succeeded" => {
            let fee = object["latest_charge"]["balance_transaction"]["fee"].as_i64();
            fee_known = fee.is_some();
            (
                text(&object["id"], "payment intent id")?,
                EventKind::Captured {
                    payment_id: text(&object["id"], "payment intent id")?,
                    amount: amount(&object["amount_received"], "amount received")?,
                    fee: fee.unwrap_or(0),
                },
            )
        }
        "payment_intent.payment_failed" => (
            text(&object["id"], "payment intent id")?,
            EventKind::AttemptFailed,
        ),
        "refund.created" | "refund.updated" if object["status"] == "succeeded" => (
            text(&object["payment_intent"], "payment intent id")?,
            EventKind::Refunded {
                refund_id: text(&object["id"], "refund id")?,
                amount: amount(&object["amount"], "refund amount")?,
            },
        ),
        _ => return Ok(None),
    };
    Ok(Some(Notice {
        event: ProviderEvent {
            provider: "stripe".to_string(),
            event_id: text(&body["id"], "event id")?,
            provider_order_id: intent,
            kind,
        },
        fee_known,
    }))
}
