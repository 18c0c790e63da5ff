//! Paid enrollment through the gateway: checkout, the providers (the built-in sandbox,
//! and the testkit's Razorpay and Stripe API servers), webhooks, refunds, reconciliation,
//! and the saga to access on the embedded bus and on Kafka. One binary, a module per
//! side: [`sandbox`] (the saga on each bus) and [`providers`] (the mock providers).

mod providers;
mod sandbox;

use std::time::Duration;

use duovarsity::Component;
use duovarsity_testkit::{TEST_ADMIN, TestPlatform};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Polls `check` every 100 ms for up to 15 s until it gives a value.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..150 {
        if let Some(value) = check().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 15 s");
}

/// A platform with an admin who owns one published paid course (and its lesson).
struct Shop {
    p: TestPlatform,
    admin: String,
}

impl Shop {
    async fn start(settings: &[(&str, &str)]) -> Self {
        let p = TestPlatform::start_with_admin(Component::All, settings).await;
        let (_, admin) = p.sign_in(TEST_ADMIN).await;
        Self { p, admin }
    }

    /// A paid course (USD 49.00) and a learner enrolled in it, waiting for payment:
    /// (course id, lesson id, learner token).
    async fn pending_learner(&self, slug: &str) -> (String, String, String) {
        let (course, lesson) = self
            .p
            .paid_course_with_lesson(&self.admin, slug, 4900, "USD")
            .await;
        let (_, learner) = self.p.sign_up(&format!("{slug}@example.com")).await;
        let enrollment = self.p.enroll(&learner, &course).await;
        assert_eq!(enrollment["status"], "ENROLLMENT_STATUS_PENDING_PAYMENT");
        (course, lesson, learner)
    }

    async fn checkout(&self, token: &str, course: &str, key: Option<&str>) -> (StatusCode, Value) {
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        self.p
            .call_with(
                Method::POST,
                &format!("/v1/courses/{course}/checkout"),
                Some(token),
                &headers,
                Some(json!({})),
            )
            .await
    }

    /// `POST /v1/orders/{id}:refund` with `body`.
    async fn refund(&self, token: &str, order_id: &str, body: Value) -> (StatusCode, Value) {
        let path = format!("/v1/orders/{order_id}:refund");
        self.p
            .call(Method::POST, &path, Some(token), Some(body))
            .await
    }

    async fn order(&self, token: &str, order_id: &str) -> Value {
        let (status, order) = self
            .p
            .call(
                Method::GET,
                &format!("/v1/orders/{order_id}"),
                Some(token),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{order}");
        order
    }

    async fn enrollment_status(&self, token: &str, course: &str) -> String {
        let (_, enrollment) = self
            .p
            .call(
                Method::GET,
                &format!("/v1/courses/{course}/enrollment"),
                Some(token),
                None,
            )
            .await;
        enrollment["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn wait_for_enrollment(&self, token: &str, course: &str, status: &str) {
        eventually(&format!("enrollment {status}"), || async {
            (self.enrollment_status(token, course).await == status).then_some(())
        })
        .await;
    }

    async fn lesson_status(&self, token: Option<&str>, lesson: &str) -> StatusCode {
        self.p
            .call(
                Method::GET,
                &format!("/v1/lessons/{lesson}/content"),
                token,
                None,
            )
            .await
            .0
    }

    /// The ledger as an admin sees it: every currency's sum must be zero.
    async fn assert_ledger_balances(&self) -> Value {
        let (status, ledger) = self
            .p
            .call(Method::GET, "/v1/payments/ledger", Some(&self.admin), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{ledger}");
        for sum in ledger["imbalance"].as_array().unwrap() {
            assert_eq!(sum["amountMinor"], "0", "{ledger}");
        }
        ledger
    }

    async fn post_webhook(
        &self,
        provider: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new()
            .post(self.p.url(&format!("/v1/payments/webhooks/{provider}")))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

fn balance(ledger: &Value, account: &str) -> i64 {
    ledger["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == account)
        .map_or(0, |a| {
            a["balance"]["amountMinor"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
}
