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
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let url = platform.url("/healthz");
    let client = platform.client.clone();
    platform.stop().await;
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), StatusCode::OK);
    }
    // After the stop nothing listens.
    assert!(client.get(url).send().await.is_err());
}
