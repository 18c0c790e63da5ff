//! Graceful shutdown: calls in flight when shutdown starts finish normally.

use duovarsity_testkit::TestPlatform;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn in_flight_calls_finish_during_shutdown() {
    let platform = TestPlatform::start().await;
    platform.sign_up("drain@example.com").await;
    // Sign-ins take tens of milliseconds (argon2id), so these are in flight when the stop
    // begins.
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let client = platform.client.clone();
            let url = platform.url("/v1/auth/login");
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&json!({"email": "drain@example.com", "password": duovarsity_testkit::TEST_PASSWORD}))
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    // The stop begins once all eight have reached the gateway (running, by its in-flight
    // gauge, or already answered), not after a guessed pause. This binary runs one
    // platform, so the metrics are its own; the sign-up above made one login already.
    loop {
        let metrics = platform.metrics().await;
        let value = |line: &str| {
            line.rsplit_once(' ')
                .and_then(|(_, value)| value.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let in_flight: f64 = metrics
            .lines()
            .filter(|line| line.starts_with("http_requests_in_flight "))
            .map(value)
            .sum();
        let answered: f64 = metrics
            .lines()
            .filter(|line| {
                line.starts_with("http_requests_total{")
                    && line.contains("route=\"/v1/auth/login\"")
            })
            .map(value)
            .sum();
        if in_flight + answered - 1.0 >= 8.0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let url = platform.url("/healthz");
    let client = platform.client.clone();
    platform.stop().await;
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), StatusCode::OK);
    }
    // After the stop nothing listens.
    assert!(client.get(url).send().await.is_err());
}
