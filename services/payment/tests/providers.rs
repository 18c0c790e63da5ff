//! The provider clients against mock servers that speak each provider's API and sign as
//! it does (`duovarsity_testkit::razorpay`, `duovarsity_testkit::stripe`).

use std::time::Duration;

use duovarsity_payment::orders::EventKind;
use duovarsity_payment::provider::{OrderRequest, Provider, ProviderError, Settlement};
use duovarsity_payment::razorpay::{Razorpay, RazorpaySettings};
use duovarsity_payment::stripe::{Stripe, StripeSettings};
use duovarsity_payment::{signature, webhooks};
use duovarsity_testkit::razorpay::{FEE_BPS, MockRazorpay};
use duovarsity_testkit::stripe::{MockStripe, fee as stripe_fee};

fn client(mock: &MockRazorpay, key_secret: &str) -> Razorpay {
    Razorpay::new(RazorpaySettings {
        base_url: mock.url(),
        key_id: mock.key_id.clone(),
        key_secret: key_secret.to_string().into(),
        deadline: Duration::from_secs(2),
    })
    .unwrap()
}

fn order(reference: &str, amount: i64) -> OrderRequest {
    OrderRequest {
        reference: reference.to_string(),
        amount,
        currency: "INR".to_string(),
    }
}

#[tokio::test]
async fn razorpay_orders_payments_and_refunds() {
    let mock = MockRazorpay::start().await;
    let razorpay = client(&mock, &mock.key_secret);

    let created = razorpay
        .create_order(&order("ord-1", 49_900))
        .await
        .unwrap();
    assert!(created.id.starts_with("order_"), "{created:?}");
    assert_eq!(created.client_secret, None);
    let stored = mock.order(&created.id).unwrap();
    assert_eq!(
        (stored["amount"].as_i64(), stored["receipt"].as_str()),
        (Some(49_900), Some("ord-1"))
    );
    assert_eq!(mock.calls("create_order"), 1);
    assert_eq!(
        razorpay.settlement(&created.id).await.unwrap(),
        Settlement::Open
    );

    // A failed attempt leaves the order open; the next attempt pays it.
    let failed = mock.fail(&created.id);
    assert_eq!(
        razorpay.settlement(&created.id).await.unwrap(),
        Settlement::Open
    );
    let paid = mock.pay(&created.id);
    // What the checkout hands the client verifies against the order id we stored...
    signature::verify_razorpay_payment(
        mock.key_secret.as_bytes(),
        &created.id,
        &paid.payment_id,
        &paid.signature,
    )
    .unwrap();
    // ...and the webhooks verify over their raw bodies.
    for webhook in [&failed, &paid.webhook] {
        signature::verify_razorpay_webhook(
            mock.webhook_secret.as_bytes(),
            &webhook.body,
            &webhook.signature,
        )
        .unwrap();
    }
    assert_eq!(
        razorpay.settlement(&created.id).await.unwrap(),
        Settlement::Captured {
            payment_id: paid.payment_id.clone(),
            amount: 49_900,
            fee: 49_900 * FEE_BPS / 10_000,
        }
    );

    let first = razorpay
        .refund(&paid.payment_id, 10_000, "ref-1")
        .await
        .unwrap();
    assert_eq!(first.amount, 10_000);
    assert!(first.id.starts_with("rfnd_"));
    let too_much = razorpay.refund(&paid.payment_id, 40_000, "ref-2").await;
    assert!(
        matches!(&too_much, Err(ProviderError::Rejected(m)) if m.contains("greater than amount captured")),
        "{too_much:?}"
    );
}

#[tokio::test]
async fn razorpay_errors_say_whether_to_retry() {
    let mock = MockRazorpay::start().await;
    let wrong_key = client(&mock, "not-the-secret");
    let refused = wrong_key.create_order(&order("ord-2", 10_000)).await;
    assert!(
        matches!(&refused, Err(ProviderError::Rejected(m)) if m.contains("Authentication failed")),
        "{refused:?}"
    );
    let razorpay = client(&mock, &mock.key_secret);
    let too_small = razorpay.create_order(&order("ord-3", 50)).await;
    assert!(
        matches!(too_small, Err(ProviderError::Rejected(_))),
        "{too_small:?}"
    );

    mock.set_down(true);
    let down = razorpay.create_order(&order("ord-4", 10_000)).await;
    assert!(
        matches!(down, Err(ProviderError::Unavailable(_))),
        "{down:?}"
    );
    mock.set_down(false);
    assert!(razorpay.create_order(&order("ord-4", 10_000)).await.is_ok());

    // Nobody listening: no answer, so nothing was decided.
    let url = mock.url();
    drop(mock);
    let gone = Razorpay::new(RazorpaySettings {
        base_url: url,
        key_id: "k".into(),
        key_secret: "s".to_string().into(),
        deadline: Duration::from_millis(500),
    })
    .unwrap();
    let unreachable = gone.create_order(&order("ord-5", 10_000)).await;
    assert!(
        matches!(unreachable, Err(ProviderError::Unavailable(_))),
        "{unreachable:?}"
    );
}

fn stripe(mock: &MockStripe) -> Stripe {
    Stripe::new(StripeSettings {
        base_url: mock.url(),
        secret_key: mock.secret_key.clone().into(),
        deadline: Duration::from_secs(2),
    })
    .unwrap()
}

#[tokio::test]
async fn stripe_payment_intents_are_idempotent_and_refundable() {
    let mock = MockStripe::start().await;
    let stripe = stripe(&mock);
    let request = OrderRequest {
        currency: "USD".to_string(),
        ..order("ord-10", 4_900)
    };
    let created = stripe.create_order(&request).await.unwrap();
    assert!(created.id.starts_with("pi_"), "{created:?}");
    assert!(
        created
            .client_secret
            .as_deref()
            .is_some_and(|s| s.starts_with(&created.id))
    );
    // A retried create (same order) is the same intent: Stripe's idempotency key.
    assert_eq!(stripe.create_order(&request).await.unwrap(), created);
    assert_eq!((mock.calls("create_intent"), mock.intents()), (2, 1));
    // The same order for another amount reuses the key with other parameters: refused.
    let changed = stripe
        .create_order(&OrderRequest {
            amount: 9_900,
            ..request.clone()
        })
        .await;
    assert!(
        matches!(&changed, Err(ProviderError::Rejected(m)) if m.contains("same parameters")),
        "{changed:?}"
    );

    assert_eq!(
        stripe.settlement(&created.id).await.unwrap(),
        Settlement::Open
    );
    let now = 1_700_000_000;
    let webhook = mock.succeed(&created.id, now);
    signature::verify_stripe_webhook(
        mock.webhook_secret.as_bytes(),
        &webhook.body,
        &webhook.signature,
        now + 5,
        300,
    )
    .unwrap();
    assert_eq!(
        stripe.settlement(&created.id).await.unwrap(),
        Settlement::Captured {
            payment_id: created.id.clone(),
            amount: 4_900,
            fee: stripe_fee(4_900),
        }
    );

    let refund = stripe.refund(&created.id, 1_000, "refund-1").await.unwrap();
    assert_eq!(refund.amount, 1_000);
    // Retried with its key: the same refund, not a second one.
    assert_eq!(
        stripe.refund(&created.id, 1_000, "refund-1").await.unwrap(),
        refund
    );
    let too_much = stripe.refund(&created.id, 4_000, "refund-2").await;
    assert!(
        matches!(too_much, Err(ProviderError::Rejected(_))),
        "{too_much:?}"
    );

    mock.set_down(true);
    let down = stripe.settlement(&created.id).await;
    assert!(
        matches!(down, Err(ProviderError::Unavailable(_))),
        "{down:?}"
    );
}

#[tokio::test]
async fn razorpay_webhooks_become_order_events_after_their_signature() {
    let mock = MockRazorpay::start().await;
    let razorpay = client(&mock, &mock.key_secret);
    let created = razorpay
        .create_order(&order("ord-20", 20_000))
        .await
        .unwrap();
    let secret = mock.webhook_secret.as_bytes();

    let failed = mock.fail(&created.id);
    let notice = webhooks::razorpay(secret, &failed.body, &failed.signature, &failed.event_id)
        .unwrap()
        .unwrap();
    assert_eq!(notice.event.kind, EventKind::AttemptFailed);
    assert_eq!(notice.event.provider_order_id, created.id);

    let paid = mock.pay(&created.id);
    let webhook = &paid.webhook;
    let notice = webhooks::razorpay(secret, &webhook.body, &webhook.signature, &webhook.event_id)
        .unwrap()
        .unwrap();
    assert_eq!(
        notice.event.kind,
        EventKind::Captured {
            payment_id: paid.payment_id.clone(),
            amount: 20_000,
            fee: 20_000 * FEE_BPS / 10_000,
        }
    );
    assert_eq!(notice.event.event_id, webhook.event_id);

    // A bad signature, or a body changed after signing: refused.
    let mut tampered = webhook.body.clone();
    tampered[10] ^= 1;
    assert!(webhooks::razorpay(secret, &tampered, &webhook.signature, "e").is_err());
    assert!(webhooks::razorpay(b"other", &webhook.body, &webhook.signature, "e").is_err());

    // A refund, in Razorpay's format; and an event about something else: acknowledged only.
    let refund = serde_json::to_vec(&serde_json::json!({
        "entity": "event", "event": "refund.processed", "contains": ["refund", "payment"],
        "payload": {
            "refund": {"entity": {"id": "rfnd_1", "amount": 5_000, "payment_id": paid.payment_id}},
            "payment": {"entity": {"id": paid.payment_id, "order_id": created.id}},
        },
    }))
    .unwrap();
    let notice = webhooks::razorpay(secret, &refund, &signature::sign(secret, &refund), "e2")
        .unwrap()
        .unwrap();
    assert_eq!(
        notice.event.kind,
        EventKind::Refunded {
            refund_id: "rfnd_1".into(),
            amount: 5_000
        }
    );
    let other = br#"{"event":"order.notification","payload":{}}"#;
    assert_eq!(
        webhooks::razorpay(secret, other, &signature::sign(secret, other), "e3"),
        Ok(None)
    );
}

#[tokio::test]
async fn stripe_webhooks_check_the_replay_window_and_leave_the_fee_to_the_api() {
    let mock = MockStripe::start().await;
    let stripe = stripe(&mock);
    let request = OrderRequest {
        currency: "USD".to_string(),
        ..order("ord-21", 4_900)
    };
    let created = stripe.create_order(&request).await.unwrap();
    let now = 1_700_000_000;
    let webhook = mock.succeed(&created.id, now);
    let secret = mock.webhook_secret.as_bytes();
    let notice = webhooks::stripe(secret, &webhook.body, &webhook.signature, now + 1, 300)
        .unwrap()
        .unwrap();
    assert_eq!(notice.event.event_id, webhook.event_id);
    assert_eq!(notice.event.provider_order_id, created.id);
    assert!(
        !notice.fee_known,
        "Stripe's event names the charge, not its fee"
    );
    let Settlement::Captured { fee, .. } = stripe.settlement(&created.id).await.unwrap() else {
        panic!("the intent succeeded");
    };
    assert_eq!(fee, stripe_fee(4_900));
    let replayed = webhooks::stripe(secret, &webhook.body, &webhook.signature, now + 600, 300);
    assert!(
        matches!(replayed, Err(webhooks::WebhookError::Signature(_))),
        "{replayed:?}"
    );
}
