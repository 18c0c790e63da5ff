//! The payment service against the testkit's Razorpay and Stripe API servers: one key,
//! one order; the provider down; webhooks verified, deduplicated and forward-only;
//! Stripe's replay window; reconciliation and expiry.

use duovarsity_testkit::razorpay::MockRazorpay;
use duovarsity_testkit::stripe::MockStripe;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Shop, balance, eventually};

/// Settings that point the platform at the testkit's Razorpay.
fn razorpay_settings(mock: &MockRazorpay) -> Vec<(&'static str, String)> {
    vec![
        ("DUOVARSITY_RAZORPAY_API_URL", mock.url()),
        ("DUOVARSITY_RAZORPAY_KEY_ID", mock.key_id.clone()),
        ("DUOVARSITY_RAZORPAY_KEY_SECRET", mock.key_secret.clone()),
        (
            "DUOVARSITY_RAZORPAY_WEBHOOK_SECRET",
            mock.webhook_secret.clone(),
        ),
    ]
}

async fn razorpay_shop(mock: &MockRazorpay, extra: &[(&'static str, &str)]) -> Shop {
    let mut settings = razorpay_settings(mock);
    settings.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Shop::start(&settings).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_checkouts_with_one_key_make_one_order() {
    let mock = MockRazorpay::start().await;
    let shop = razorpay_shop(&mock, &[]).await;
    let (course, _, learner) = shop.pending_learner("one-key").await;

    let answers = futures::future::join_all(
        (0..100).map(|_| shop.checkout(&learner, &course, Some("checkout-once"))),
    )
    .await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(status, order)| {
            assert_eq!(*status, StatusCode::OK, "{order}");
            order["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one order for one key");
    assert_eq!(mock.calls("create_order"), 1, "one provider call");
    let (_, orders) = shop
        .p
        .call(Method::GET, "/v1/me/orders", Some(&learner), None)
        .await;
    assert_eq!(orders["orders"].as_array().unwrap().len(), 1, "{orders}");

    // The same key with another course: 422, and nothing made.
    let (other, _, _) = shop.pending_learner("other-course").await;
    let (status, problem) = shop.checkout(&learner, &other, Some("checkout-once")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["reason"], "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(mock.calls("create_order"), 1);

    // Without a key, racing checkouts still make one order (one open order per course).
    let (course2, _, learner2) = shop.pending_learner("no-key").await;
    let answers =
        futures::future::join_all((0..20).map(|_| shop.checkout(&learner2, &course2, None))).await;
    let ids: std::collections::HashSet<&str> = answers
        .iter()
        .map(|(_, o)| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(mock.calls("create_order"), 2);

    // Razorpay Checkout's answer: a forged signature is refused, the real one captures.
    let order_id = ids.iter().next().unwrap().to_string();
    let provider_order = answers[0].1["providerOrderId"]
        .as_str()
        .unwrap()
        .to_string();
    let paid = mock.pay(&provider_order);
    let confirm = |signature: String| {
        let path = format!("/v1/orders/{order_id}:confirm");
        let body = json!({"razorpayPaymentId": paid.payment_id, "razorpaySignature": signature});
        let learner2 = learner2.clone();
        let p = &shop.p;
        async move {
            p.call(Method::POST, &path, Some(&learner2), Some(body))
                .await
        }
    };
    let (status, problem) = confirm("ab".repeat(32)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["reason"], "PAYMENT_SIGNATURE_INVALID");
    assert_eq!(
        shop.order(&learner2, &order_id).await["state"],
        "ORDER_STATE_CREATED"
    );
    let (status, order) = confirm(paid.signature.clone()).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["state"], "ORDER_STATE_CAPTURED");
    shop.wait_for_enrollment(&learner2, &course2, "ENROLLMENT_STATUS_ACTIVE")
        .await;
    // Another learner cannot see the order.
    let (status, _) = shop
        .p
        .call(
            Method::GET,
            &format!("/v1/orders/{order_id}"),
            Some(&learner),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    shop.p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_at_checkout_is_a_clear_503_and_nothing_is_half_written() {
    let mock = MockRazorpay::start().await;
    let shop = razorpay_shop(&mock, &[]).await;
    let (course, _, learner) = shop.pending_learner("provider-down").await;
    mock.set_down(true);
    let response = reqwest::Client::new()
        .post(shop.p.url(&format!("/v1/courses/{course}/checkout")))
        .bearer_auth(&learner)
        .header("idempotency-key", "while-down")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let (_, orders) = shop
        .p
        .call(Method::GET, "/v1/me/orders", Some(&learner), None)
        .await;
    assert_eq!(orders["orders"], json!([]), "no order was left behind");

    // Back up: the same key runs again (the failure was not stored) and makes the order.
    mock.set_down(false);
    let (status, order) = shop.checkout(&learner, &course, Some("while-down")).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["state"], "ORDER_STATE_CREATED");
    shop.p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn razorpay_webhooks_are_verified_deduplicated_and_forward_only() {
    let mock = MockRazorpay::start().await;
    let shop = razorpay_shop(&mock, &[]).await;
    let (course, _, learner) = shop.pending_learner("webhooks").await;
    let (_, order) = shop.checkout(&learner, &course, None).await;
    let order_id = order["id"].as_str().unwrap().to_string();
    let provider_order = order["providerOrderId"].as_str().unwrap().to_string();
    let paid = mock.pay(&provider_order);
    let deliver = |webhook: &duovarsity_testkit::razorpay::Webhook, signature: &str| {
        let headers = [
            ("x-razorpay-signature", signature.to_string()),
            ("x-razorpay-event-id", webhook.event_id.clone()),
        ];
        let body = webhook.body.clone();
        let shop = &shop;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            shop.post_webhook("razorpay", &headers, &body).await
        }
    };

    // A bad signature, and a missing one: refused, nothing changed.
    let (status, problem) = deliver(&paid.webhook, &"00".repeat(32)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["reason"], "WEBHOOK_SIGNATURE_INVALID");
    let (status, _) = shop.post_webhook("razorpay", &[], &paid.webhook.body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        shop.order(&learner, &order_id).await["state"],
        "ORDER_STATE_CREATED"
    );

    // The real one captures; its replay is acknowledged and changes nothing.
    let (status, ack) = deliver(&paid.webhook, &paid.webhook.signature).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (StatusCode::OK, Some("verified"))
    );
    let (status, ack) = deliver(&paid.webhook, &paid.webhook.signature).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );

    // Out of order: a failed attempt reported after the capture is ignored.
    let failed = mock.fail(&provider_order);
    let (status, ack) = deliver(&failed, &failed.signature).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (StatusCode::OK, Some("ignored"))
    );
    assert_eq!(
        shop.order(&learner, &order_id).await["state"],
        "ORDER_STATE_CAPTURED"
    );

    // The capture again under a new event id: behind the order, posted once.
    let mut again = paid.webhook.clone();
    again.event_id = "evt_again".into();
    let (status, ack) = deliver(&again, &again.signature).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (StatusCode::OK, Some("ignored"))
    );
    let (_, receipts) = shop
        .p
        .call(Method::GET, "/v1/me/receipts", Some(&learner), None)
        .await;
    assert_eq!(
        receipts["receipts"].as_array().unwrap().len(),
        1,
        "{receipts}"
    );
    let ledger = shop.assert_ledger_balances().await;
    let fee = 4900 * duovarsity_testkit::razorpay::FEE_BPS / 10_000;
    assert_eq!(balance(&ledger, "provider_fees:razorpay"), fee);
    assert_eq!(balance(&ledger, "provider_balance:razorpay"), 4900 - fee);

    // An event for an order that is not ours: 404 (the provider retries), nothing stored.
    let stranger = reqwest::Client::new()
        .post(format!("{}/v1/orders", mock.url()))
        .basic_auth(&mock.key_id, Some(&mock.key_secret))
        .json(&json!({"amount": 1000, "currency": "USD", "receipt": "not-ours"}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let foreign = mock.pay(stranger["id"].as_str().unwrap()).webhook;
    let (status, _) = deliver(&foreign, &foreign.signature).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    shop.assert_ledger_balances().await;
    shop.wait_for_enrollment(&learner, &course, "ENROLLMENT_STATUS_ACTIVE")
        .await;
    shop.p.stop().await;
}

/// Delivers a Stripe webhook as Stripe does; the status and the acknowledged outcome.
async fn stripe_webhook(
    shop: &Shop,
    webhook: &duovarsity_testkit::stripe::Webhook,
) -> (StatusCode, Value) {
    let headers = [("stripe-signature", webhook.signature.as_str())];
    shop.post_webhook("stripe", &headers, &webhook.body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_payments_check_signatures_and_the_replay_window() {
    let mock = MockStripe::start().await;
    let settings = [
        ("DUOVARSITY_PAYMENT_PROVIDER", "stripe"),
        ("DUOVARSITY_STRIPE_API_URL", &mock.url()),
        ("DUOVARSITY_STRIPE_SECRET_KEY", &mock.secret_key),
        ("DUOVARSITY_STRIPE_WEBHOOK_SECRET", &mock.webhook_secret),
    ];
    let shop = Shop::start(&settings).await;
    let (course, lesson, learner) = shop.pending_learner("stripe-course").await;
    let (status, order) = shop.checkout(&learner, &course, Some("stripe-key")).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    let intent = order["payWith"]["stripe"]["paymentIntentId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        order["payWith"]["stripe"]["clientSecret"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert_eq!(mock.intents(), 1);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Signed ten minutes ago: outside the 5-minute window, refused as a replay.
    let stale = mock.succeed(&intent, now - 600);
    let (status, problem) = stripe_webhook(&shop, &stale).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(
        shop.order(&learner, order["id"].as_str().unwrap()).await["state"],
        "ORDER_STATE_CREATED"
    );

    let fresh = mock.succeed(&intent, now);
    let (status, ack) = stripe_webhook(&shop, &fresh).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (StatusCode::OK, Some("verified")),
        "{ack}"
    );
    let (status, ack) = stripe_webhook(&shop, &fresh).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );
    shop.wait_for_enrollment(&learner, &course, "ENROLLMENT_STATUS_ACTIVE")
        .await;
    assert_eq!(
        shop.lesson_status(Some(&learner), &lesson).await,
        StatusCode::OK
    );
    // The fee was read from Stripe's API (the event does not carry it).
    let ledger = shop.assert_ledger_balances().await;
    assert_eq!(
        balance(&ledger, "provider_fees:stripe"),
        duovarsity_testkit::stripe::fee(4900)
    );

    // A learner may not refund part and keep the course.
    let order_id = order["id"].as_str().unwrap();
    let (status, problem) = shop
        .refund(&learner, order_id, json!({"amountMinor": 2450}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["reason"], "PARTIAL_REFUND_NOT_ALLOWED");
    assert_eq!(
        shop.order(&learner, order_id).await["state"],
        "ORDER_STATE_CAPTURED"
    );
    // An admin's partial refund (goodwill) keeps access; Stripe got an idempotency key.
    let (status, refunded) = shop
        .refund(&shop.admin, order_id, json!({"amountMinor": 1000}))
        .await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    assert_eq!(refunded["state"], "ORDER_STATE_PARTIALLY_REFUNDED");
    let (status, problem) = shop
        .refund(&shop.admin, order_id, json!({"amountMinor": 9000}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(
        shop.enrollment_status(&learner, &course).await,
        "ENROLLMENT_STATUS_ACTIVE"
    );
    assert_eq!(
        shop.lesson_status(Some(&learner), &lesson).await,
        StatusCode::OK
    );
    // The learner's own refund is of everything left, and ends access.
    let (status, refunded) = shop.refund(&learner, order_id, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    assert_eq!(refunded["state"], "ORDER_STATE_REFUNDED");
    assert_eq!(refunded["refundedMinor"], "4900", "{refunded}");
    shop.wait_for_enrollment(&learner, &course, "ENROLLMENT_STATUS_CANCELLED")
        .await;
    assert_ne!(
        shop.lesson_status(Some(&learner), &lesson).await,
        StatusCode::OK
    );
    shop.assert_ledger_balances().await;
    shop.p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_applies_missed_webhooks_and_expires_abandoned_orders() {
    let mock = MockRazorpay::start().await;
    let shop = razorpay_shop(
        &mock,
        &[
            ("DUOVARSITY_PAYMENT_RECONCILE_AFTER_SECS", "1"),
            ("DUOVARSITY_PAYMENT_ORDER_TTL_SECS", "3"),
            ("DUOVARSITY_PAYMENT_REFUND_WINDOW_DAYS", "0"),
        ],
    )
    .await;
    let (paid_course, _, payer) = shop.pending_learner("missed-webhook").await;
    let (_, order) = shop.checkout(&payer, &paid_course, None).await;
    // Paid at the provider; the webhook never arrives.
    mock.pay(order["providerOrderId"].as_str().unwrap());
    shop.wait_for_enrollment(&payer, &paid_course, "ENROLLMENT_STATUS_ACTIVE")
        .await;
    let order_id = order["id"].as_str().unwrap();
    assert_eq!(
        shop.order(&payer, order_id).await["state"],
        "ORDER_STATE_CAPTURED"
    );

    let (idle_course, _, idler) = shop.pending_learner("abandoned").await;
    let (_, abandoned) = shop.checkout(&idler, &idle_course, None).await;
    let abandoned_id = abandoned["id"].as_str().unwrap().to_string();
    eventually("the abandoned order expires", || async {
        (shop.order(&idler, &abandoned_id).await["state"] == "ORDER_STATE_EXPIRED").then_some(())
    })
    .await;
    // A new checkout makes a new order.
    let (_, again) = shop.checkout(&idler, &idle_course, None).await;
    assert_ne!(again["id"], abandoned["id"]);

    // With a refund window of 0 days the learner may not refund; an admin may.
    let (status, problem) = shop.refund(&payer, order_id, json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["reason"], "REFUND_WINDOW_CLOSED");
    let (status, refunded) = shop.refund(&shop.admin, order_id, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    assert_eq!(refunded["state"], "ORDER_STATE_REFUNDED");
    shop.wait_for_enrollment(&payer, &paid_course, "ENROLLMENT_STATUS_CANCELLED")
        .await;
    let metrics = shop.p.metrics().await;
    assert!(
        metrics.contains("payment_reconciliation_fixes_total"),
        "missing fixes metric"
    );
    assert!(
        metrics.contains("payment_ledger_imbalance_minor 0"),
        "ledger gauge"
    );
    shop.assert_ledger_balances().await;
    shop.p.stop().await;
}

/// The `checkout-provider` flag moves new orders from one provider to another, and an
/// order keeps the provider it was made with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkout_provider_flag_moves_new_orders_to_another_provider() {
    let mock = MockStripe::start().await;
    // Razorpay (the sandbox) takes payments; Stripe is configured too.
    let settings = [
        ("DUOVARSITY_STRIPE_API_URL", mock.url()),
        ("DUOVARSITY_STRIPE_SECRET_KEY", mock.secret_key.clone()),
        (
            "DUOVARSITY_STRIPE_WEBHOOK_SECRET",
            mock.webhook_secret.clone(),
        ),
    ];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let shop = Shop::start(&settings).await;
    let (course, _, before) = shop.pending_learner("moving-course").await;
    let (status, first) = shop.checkout(&before, &course, None).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert!(first["payWith"]["razorpay"].is_object(), "{first}");

    let to_stripe = json!({
        "state": "ENABLED",
        "variants": {"razorpay": "razorpay", "stripe": "stripe"},
        "defaultVariant": "razorpay",
        "targeting": {"fractional": [["stripe", 100], ["razorpay", 0]]}
    });
    let (status, body) = shop
        .p
        .call(
            Method::PUT,
            "/v1/admin/flags/checkout-provider",
            Some(&shop.admin),
            Some(to_stripe),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, after) = shop.p.sign_up("after@example.com").await;
    shop.p.enroll(&after, &course).await;
    let (status, second) = shop.checkout(&after, &course, None).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    assert!(second["payWith"]["stripe"].is_object(), "{second}");
    assert_eq!(mock.intents(), 1);
    // The first learner's order was made with Razorpay and stays there.
    let order = shop.order(&before, first["id"].as_str().unwrap()).await;
    assert!(order["payWith"]["razorpay"].is_object(), "{order}");
    shop.p.stop().await;
}
