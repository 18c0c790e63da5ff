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

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};

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

/// `body` read as `T`: a shape the provider does not send is refused, naming what is off.
fn read<T: DeserializeOwned>(body: &[u8]) -> Result<T, WebhookError> {
    serde_json::from_slice(body).map_err(|error| WebhookError::Body(error.to_string()))
}

/// What every webhook says first: which event it is. The rest is read only for the
/// events the platform acts on, so an event it ignores may have any shape.
#[derive(Deserialize)]
struct Kind {
    #[serde(alias = "type")]
    event: String,
}

/// Razorpay's webhook: `{"event", "payload": {"payment": {"entity"}, "refund": {"entity"}}}`.
#[derive(Deserialize)]
struct RazorpayEvent {
    payload: RazorpayPayload,
}

#[derive(Deserialize)]
struct RazorpayPayload {
    payment: Entity<RazorpayPayment>,
    refund: Option<Entity<RazorpayRefund>>,
}

#[derive(Deserialize)]
struct Entity<T> {
    entity: T,
}

#[derive(Deserialize)]
struct RazorpayPayment {
    id: Option<String>,
    order_id: String,
    amount: Option<i64>,
    /// Razorpay's fee; absent on test-mode and some authorized payments.
    #[serde(default)]
    fee: Option<i64>,
}

#[derive(Deserialize)]
struct RazorpayRefund {
    id: String,
    amount: i64,
}

/// Stripe's event: `{"id", "type", "data": {"object"}}`; the object is a PaymentIntent or
/// a Refund by `type`.
#[derive(Deserialize)]
struct StripeEvent<T> {
    id: String,
    data: StripeData<T>,
}

#[derive(Deserialize)]
struct StripeData<T> {
    object: T,
}

#[derive(Deserialize)]
struct PaymentIntent {
    id: String,
    amount_received: Option<i64>,
    /// Expanded only when the webhook endpoint asks for it; otherwise an id.
    #[serde(default)]
    latest_charge: Option<LatestCharge>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LatestCharge {
    Expanded {
        balance_transaction: Option<BalanceTransaction>,
    },
    /// The charge's id: its fee is read from the API.
    Id(IgnoredAny),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BalanceTransaction {
    Expanded { fee: i64 },
    Id(IgnoredAny),
}

#[derive(Deserialize)]
struct StripeRefund {
    id: String,
    payment_intent: Option<String>,
    amount: Option<i64>,
    status: String,
}

impl PaymentIntent {
    /// Stripe's fee when the event carries it expanded.
    fn fee(&self) -> Option<i64> {
        match &self.latest_charge {
            Some(LatestCharge::Expanded {
                balance_transaction: Some(BalanceTransaction::Expanded { fee }),
            }) => Some(*fee),
            _ => None,
        }
    }
}

/// A Razorpay webhook: `body` as received, with its signature and event id headers.
pub fn razorpay(
    webhook_secret: &[u8],
    body: &[u8],
    signature_header: &str,
    event_id: &str,
) -> Result<Option<Notice>, WebhookError> {
    signature::verify_razorpay_webhook(webhook_secret, body, signature_header)?;
    let Kind { event } = read(body)?;
    if !matches!(
        event.as_str(),
        "payment.authorized" | "payment.captured" | "payment.failed" | "refund.processed"
    ) {
        return Ok(None);
    }
    let RazorpayEvent { payload } = read(body)?;
    let payment = payload.payment.entity;
    let payment_id = || {
        payment
            .id
            .clone()
            .ok_or_else(|| WebhookError::Body("no payment id".into()))
    };
    let kind = match event.as_str() {
        "payment.authorized" => EventKind::Authorized {
            payment_id: payment_id()?,
        },
        "payment.captured" => EventKind::Captured {
            payment_id: payment_id()?,
            amount: payment
                .amount
                .ok_or_else(|| WebhookError::Body("no amount".into()))?,
            fee: payment.fee.unwrap_or(0),
        },
        "payment.failed" => EventKind::AttemptFailed,
        _ => {
            let refund = payload
                .refund
                .ok_or_else(|| WebhookError::Body("no refund".into()))?
                .entity;
            EventKind::Refunded {
                refund_id: refund.id,
                amount: refund.amount,
            }
        }
    };
    Ok(Some(Notice {
        event: ProviderEvent {
            provider: "razorpay".to_string(),
            event_id: event_id.to_string(),
            provider_order_id: payment.order_id,
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
    let Kind { event } = read(body)?;
    let notice = |event_id: String, intent: String, kind: EventKind, fee_known: bool| Notice {
        event: ProviderEvent {
            provider: "stripe".to_string(),
            event_id,
            provider_order_id: intent,
            kind,
        },
        fee_known,
    };
    Ok(Some(match event.as_str() {
        "payment_intent.amount_capturable_updated" => {
            let StripeEvent { id, data } = read::<StripeEvent<PaymentIntent>>(body)?;
            let intent = data.object;
            let kind = EventKind::Authorized {
                payment_id: intent.id.clone(),
            };
            notice(id, intent.id, kind, true)
        }
        "payment_intent.succeeded" => {
            let StripeEvent { id, data } = read::<StripeEvent<PaymentIntent>>(body)?;
            let intent = data.object;
            let fee = intent.fee();
            let kind = EventKind::Captured {
                payment_id: intent.id.clone(),
                amount: intent
                    .amount_received
                    .ok_or_else(|| WebhookError::Body("no amount received".into()))?,
                fee: fee.unwrap_or(0),
            };
            notice(id, intent.id, kind, fee.is_some())
        }
        "payment_intent.payment_failed" => {
            let StripeEvent { id, data } = read::<StripeEvent<PaymentIntent>>(body)?;
            notice(id, data.object.id, EventKind::AttemptFailed, true)
        }
        "refund.created" | "refund.updated" => {
            let StripeEvent { id, data } = read::<StripeEvent<StripeRefund>>(body)?;
            let refund = data.object;
            if refund.status != "succeeded" {
                return Ok(None);
            }
            let missing = |what: &str| WebhookError::Body(format!("no {what}"));
            let intent = refund
                .payment_intent
                .ok_or_else(|| missing("payment intent id"))?;
            let kind = EventKind::Refunded {
                refund_id: refund.id,
                amount: refund.amount.ok_or_else(|| missing("refund amount"))?,
            };
            notice(id, intent, kind, true)
        }
        _ => return Ok(None),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"whsec_test";

    fn stripe_event(body: serde_json::Value) -> Result<Option<Notice>, WebhookError> {
        let body = body.to_string();
        let header = signature::stripe_header(SECRET, body.as_bytes(), 1_000);
        stripe(SECRET, body.as_bytes(), &header, 1_000, 300)
    }

    fn razorpay_event(body: serde_json::Value) -> Result<Option<Notice>, WebhookError> {
        let body = body.to_string();
        let header = signature::sign(SECRET, body.as_bytes());
        razorpay(SECRET, body.as_bytes(), &header, "evt_1")
    }

    #[test]
    fn a_capture_carries_its_fee_only_when_stripe_expanded_it() {
        let expanded = json!({"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {
            "id": "pi_1", "amount_received": 49_900,
            "latest_charge": {"balance_transaction": {"fee": 1_200}}}}});
        let notice = stripe_event(expanded).unwrap().unwrap();
        assert!(notice.fee_known);
        assert_eq!(
            notice.event.kind,
            EventKind::Captured {
                payment_id: "pi_1".into(),
                amount: 49_900,
                fee: 1_200
            }
        );
        let by_id = json!({"id": "evt_2", "type": "payment_intent.succeeded", "data": {"object": {
            "id": "pi_1", "amount_received": 49_900, "latest_charge": "ch_1"}}});
        assert!(!stripe_event(by_id).unwrap().unwrap().fee_known);
    }

    #[test]
    fn events_the_platform_ignores_may_have_any_shape_and_the_others_must_be_whole() {
        let other = json!({"id": "evt_3", "type": "customer.created", "data": {"object": 7}});
        assert_eq!(stripe_event(other).unwrap(), None);
        let pending = json!({"id": "evt_4", "type": "refund.updated", "data": {"object": {
            "id": "re_1", "status": "pending", "payment_intent": null}}});
        assert_eq!(stripe_event(pending).unwrap(), None);
        let no_amount = json!({"id": "evt_5", "type": "payment_intent.succeeded",
            "data": {"object": {"id": "pi_1"}}});
        assert!(
            matches!(stripe_event(no_amount), Err(WebhookError::Body(m)) if m.contains("amount"))
        );
        let ignored = json!({"event": "order.paid", "payload": {}});
        assert_eq!(razorpay_event(ignored).unwrap(), None);
        let captured = json!({"event": "payment.captured", "payload": {"payment": {"entity": {
            "id": "pay_1", "order_id": "order_1", "amount": 49_900}}}});
        let notice = razorpay_event(captured).unwrap().unwrap();
        assert_eq!(notice.event.provider_order_id, "order_1");
        let no_id = json!({"event": "payment.captured", "payload": {"payment": {"entity": {
            "order_id": "order_1", "amount": 49_900}}}});
        assert!(
            matches!(razorpay_event(no_id), Err(WebhookError::Body(m)) if m.contains("payment id"))
        );
    }
}
