//! The saga in the built-in sandbox, on the embedded bus and on Kafka.

use duovarsity_testkit::kafka_brokers;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Shop, eventually};

/// The saga on whichever bus `shop` runs: pay in the sandbox's checkout page, the
/// enrollment becomes active and the private lesson readable; a full refund revokes it.
async fn saga(shop: &Shop) {
    let (course, lesson, learner) = shop.pending_learner("saga-course").await;
    // Paid content is private: not for anonymous readers, nor for a pending enrollment.
    assert_eq!(
        shop.lesson_status(None, &lesson).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        shop.lesson_status(Some(&learner), &lesson).await,
        StatusCode::NOT_FOUND
    );

    let (status, order) = shop.checkout(&learner, &course, None).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(
        order["amount"],
        json!({"currency": "USD", "amountMinor": "4900"})
    );
    let order_id = order["id"].as_str().unwrap().to_string();
    let page = order["payWith"]["razorpay"]["checkoutUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let html = reqwest::get(&page).await.unwrap().text().await.unwrap();
    assert!(html.contains("Pay 49.00 USD"), "{html}");
    let paid: Value = reqwest::Client::new()
        .post(format!("{page}/pay"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(paid["razorpay_signature"].is_string(), "{paid}");

    // The sandbox's webhook captures the order; payment.captured activates the enrollment.
    shop.wait_for_enrollment(&learner, &course, "ENROLLMENT_STATUS_ACTIVE")
        .await;
    assert_eq!(
        shop.order(&learner, &order_id).await["state"],
        "ORDER_STATE_CAPTURED"
    );
    let content = shop
        .p
        .call_with(
            Method::GET,
            &format!("/v1/lessons/{lesson}/content"),
            Some(&learner),
            &[],
            None,
        )
        .await;
    assert_eq!(content.0, StatusCode::OK, "{}", content.1);
    let cache = reqwest::Client::new()
        .get(shop.p.url(&format!("/v1/lessons/{lesson}/content")))
        .bearer_auth(&learner)
        .send()
        .await
        .unwrap();
    let control = cache.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        control.contains("private"),
        "paid content is private: {control}"
    );
    // Confirming with Checkout's answer changes nothing more.
    let (status, confirmed) = shop
        .p
        .call(
            Method::POST,
            &format!("/v1/orders/{order_id}:confirm"),
            Some(&learner),
            Some(json!({"razorpayPaymentId": paid["razorpay_payment_id"], "razorpaySignature": paid["razorpay_signature"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{confirmed}");
    assert_eq!(confirmed["capturedMinor"], "4900");

    // A full refund by the learner, inside the window: access ends.
    let (status, refunded) = shop
        .refund(&learner, &order_id, json!({"reason": "changed my mind"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    assert_eq!(refunded["state"], "ORDER_STATE_REFUNDED");
    shop.wait_for_enrollment(&learner, &course, "ENROLLMENT_STATUS_CANCELLED")
        .await;
    assert_eq!(
        shop.lesson_status(Some(&learner), &lesson).await,
        StatusCode::NOT_FOUND
    );

    // Receipts: the payment and the refund; billing notices for both.
    let (_, receipts) = shop
        .p
        .call(Method::GET, "/v1/me/receipts", Some(&learner), None)
        .await;
    let kinds: Vec<&str> = receipts["receipts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["RECEIPT_KIND_REFUND", "RECEIPT_KIND_PAYMENT"],
        "{receipts}"
    );
    let titles: Vec<String> = eventually("billing notices", || async {
        let (_, inbox) = shop
            .p
            .call(Method::GET, "/v1/notifications", Some(&learner), None)
            .await;
        let titles: Vec<String> = inbox["notifications"]
            .as_array()?
            .iter()
            .filter(|n| n["category"] == "CATEGORY_BILLING")
            .map(|n| n["title"].as_str().unwrap_or_default().to_string())
            .collect();
        (titles.len() == 2).then_some(titles)
    })
    .await;
    assert_eq!(titles, ["Refund issued", "Payment received: your receipt"]);

    // The instructor earned nothing in the end, and the ledger balances.
    let (status, earnings) = shop
        .p
        .call(
            Method::GET,
            &format!("/v1/courses/{course}/earnings"),
            Some(&shop.admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{earnings}");
    assert_eq!(earnings["earned"][0]["amountMinor"], "0", "{earnings}");
    shop.assert_ledger_balances().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_enrollment_saga_in_the_sandbox_on_the_embedded_bus() {
    let shop = Shop::start(&[]).await;
    saga(&shop).await;
    shop.p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_enrollment_saga_in_the_sandbox_on_kafka() {
    let brokers = kafka_brokers();
    let prefix = format!("pay{}.", uuid::Uuid::now_v7().simple());
    let shop = Shop::start(&[
        ("DUOVARSITY_KAFKA_BROKERS", brokers.as_str()),
        ("DUOVARSITY_KAFKA_TOPIC_PREFIX", prefix.as_str()),
    ])
    .await;
    saga(&shop).await;
    shop.p.stop().await;
}

/// The sandbox gives courses away, so it is opt-in off the laptop: turned off
/// (`DUOVARSITY_PAYMENT_SANDBOX=off`, as `auto` does on a public address) its pages are not
/// served and checkout says no provider is configured; turned on, its pages pass through
/// the same rate limits as every other route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_is_off_when_told_and_rate_limited_when_on() {
    let off = Shop::start(&[("DUOVARSITY_PAYMENT_SANDBOX", "off")]).await;
    let page = off
        .p
        .client
        .get(off.p.url("/sandbox/checkout/order_x"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    let (course, _, learner) = off.pending_learner("no-sandbox").await;
    let (status, problem) = off.checkout(&learner, &course, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["reason"], "PAYMENTS_NOT_CONFIGURED");
    off.p.stop().await;

    let on = Shop::start(&[
        ("DUOVARSITY_PAYMENT_SANDBOX", "on"),
        ("DUOVARSITY_RATE_LIMITS_ENABLED", "true"),
        ("DUOVARSITY_RATE_LIMIT_ANONYMOUS", "3/m"),
    ])
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let page =
            on.p.client
                .get(on.p.url("/sandbox/checkout/order_x"))
                .send()
                .await
                .unwrap();
        assert!(
            page.headers().contains_key("ratelimit-policy"),
            "{:?}",
            page.headers()
        );
        assert!(
            page.headers().contains_key("x-request-id"),
            "{:?}",
            page.headers()
        );
        statuses.push(page.status());
    }
    assert_ne!(statuses[0], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    on.p.stop().await;
}
