//! Budgets that hold across replicas: two AI-routing services share Redis, behind one
//! gateway that balances between them.

use duovarsity::Component;
use duovarsity_testkit::llm::{Behaviour, MockLlm, one_model_catalog};
use duovarsity_testkit::{TEST_PASSWORD, TestPlatform, redis_url};
use reqwest::{Method, StatusCode};

use crate::{ask, chat};

/// One model whose every answer costs exactly 10,000 nano-USD (10 output tokens at
/// 1 USD per million, free input), and a daily budget of ten such answers.
fn catalog(mock: &MockLlm, key_file: &std::path::Path) -> String {
    one_model_catalog(mock, key_file, "metered", 1.0, 10, 0.0001)
}

/// A mock provider and a catalog file for it in a directory of the test's own (its key
/// in a file beside it): the directory, the catalog file and the mock.
async fn metered() -> (tempfile::TempDir, std::path::PathBuf, MockLlm) {
    let mock = MockLlm::openai().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, &mock.key).unwrap();
    let file = dir.path().join("catalog.toml");
    std::fs::write(&file, catalog(&mock, &key_file)).unwrap();
    (dir, file, mock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_on_two_replicas_spend_exactly_the_budget() {
    let (_dir, file, mock) = metered().await;
    let redis = redis_url();
    let file_setting = file.display().to_string();

    let user = TestPlatform::start_with(
        Component::Service("user"),
        &[
            ("DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL", "admin@example.com"),
            ("DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD", TEST_PASSWORD),
        ],
    )
    .await;
    let user_url = format!("http://{}", user.grpc_addr());
    let replica = || {
        let settings = [
            ("DUOVARSITY_USER_SERVICE_URL", user_url.as_str()),
            ("DUOVARSITY_REDIS_URL", redis.as_str()),
            ("DUOVARSITY_AI_CATALOG_FILE", file_setting.as_str()),
        ];
        async move { TestPlatform::start_with(Component::Service("ai-routing"), &settings).await }
    };
    let (a, b) = (replica().await, replica().await);
    let both = format!("http://{},http://{}", a.grpc_addr(), b.grpc_addr());
    let gateway = TestPlatform::start_with(
        Component::Gateway,
        &[
            ("DUOVARSITY_USER_SERVICE_URL", user_url.as_str()),
            ("DUOVARSITY_AI_ROUTING_SERVICE_URL", both.as_str()),
        ],
    )
    .await;
    let (_, learner) = gateway.sign_up("budget@example.com").await;

    // Failed calls release what they reserved.
    mock.set(Behaviour::Down);
    for _ in 0..5 {
        let (status, _, _, _) = chat(&gateway, &learner, ask("metered", "fail")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let (_, usage) = gateway
        .call(Method::GET, "/v1/ai/usage", Some(&learner), None)
        .await;
    assert_eq!(usage["spent_usd"], 0.0, "{usage}");

    // Fifty at once against a budget of ten: exactly ten answer, the rest are 429.
    mock.set(Behaviour::Answer);
    let answers = futures::future::join_all(
        (0..50).map(|n| chat(&gateway, &learner, ask("metered", &format!("question {n}")))),
    )
    .await;
    let ok = answers.iter().filter(|a| a.0 == StatusCode::OK).count();
    let refused: Vec<_> = answers
        .iter()
        .filter(|a| a.0 == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(
        (ok, refused.len()),
        (10, 40),
        "{:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    assert_eq!(
        refused[0].3["reason"], "BUDGET_EXCEEDED",
        "{}",
        refused[0].3
    );
    assert!(
        refused[0].3["detail"]
            .as_str()
            .unwrap()
            .contains("resets at")
    );
    let (_, usage) = gateway
        .call(Method::GET, "/v1/ai/usage", Some(&learner), None)
        .await;
    assert_eq!(
        usage["spent_usd"], 0.0001,
        "never more than the budget: {usage}"
    );
    assert_eq!(usage["budget_usd"], 0.0001);
    // Spent is spent: one more is refused on either replica.
    for _ in 0..2 {
        assert_eq!(
            chat(&gateway, &learner, ask("metered", "more")).await.0,
            StatusCode::TOO_MANY_REQUESTS
        );
    }
    assert_eq!(
        mock.calls(),
        5 + 10,
        "refused requests never reach the provider"
    );
    gateway.stop().await;
    a.stop().await;
    b.stop().await;
    user.stop().await;
}

/// Embedded mode (one process, SQLite): the same exactness from in-process counters, and
/// what was spent survives a restart (the counters start from the recorded usage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_budget_is_exact_and_survives_a_restart() {
    let (dir, file, _mock) = metered().await;
    let data = dir.path().join("data");
    let settings = [
        ("DUOVARSITY_AI_CATALOG_FILE", file.display().to_string()),
        ("DUOVARSITY_DATA_DIR", data.display().to_string()),
    ];
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let p = TestPlatform::start_with(Component::All, &settings).await;
    let (_, learner) = p.sign_up("embedded-budget@example.com").await;
    let answers = futures::future::join_all(
        (0..30).map(|n| chat(&p, &learner, ask("metered", &format!("q{n}")))),
    )
    .await;
    let ok = answers.iter().filter(|a| a.0 == StatusCode::OK).count();
    assert_eq!(ok, 10);
    p.stop().await;

    let p = TestPlatform::start_with(Component::All, &settings).await;
    let (_, learner) = p.sign_in("embedded-budget@example.com").await;
    let (status, _, _, problem) = chat(&p, &learner, ask("metered", "after restart")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{problem}");
    let (_, usage) = p
        .call(Method::GET, "/v1/ai/usage", Some(&learner), None)
        .await;
    assert_eq!(usage["spent_usd"], 0.0001, "{usage}");
    assert_eq!(usage["requests_today"], "10");
    p.stop().await;
}

/// A stream the learner drops half-way is settled to what was streamed: the spend is that
/// part's cost (not the worst case it reserved), and a usage row and an `ai.usage` event
/// record it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_dropped_half_way_pays_for_what_was_streamed() {
    use duovarsity_proto::events::{AiUsage, Envelope};
    use futures::StreamExt as _;
    use prost::Message as _;

    let (_dir, file, mock) = metered().await;
    let file = file.display().to_string();
    let p =
        TestPlatform::start_with(Component::All, &[("DUOVARSITY_AI_CATALOG_FILE", &file)]).await;
    let mut events = p.bus().subscribe("ai.v1", "dropped-stream").await.unwrap();
    let (learner_id, learner) = p.sign_up("dropper@example.com").await;
    mock.set(Behaviour::StallAfterFirstChunk);

    let mut body = ask("metered", "tell me everything");
    body["stream"] = serde_json::json!(true);
    let response = p
        .client
        .post(p.url("/v1/ai/chat/completions"))
        .bearer_auth(&learner)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut chunks = response.bytes_stream();
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), chunks.next())
        .await
        .expect("the first chunk")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("data: "));
    // The learner goes away; the provider would have gone on for ever.
    drop(chunks);

    let record = tokio::time::timeout(std::time::Duration::from_secs(10), events.next())
        .await
        .expect("an ai.usage event for the dropped stream")
        .unwrap();
    let envelope = Envelope::decode(record.payload.clone()).unwrap();
    assert_eq!(envelope.r#type, "ai.usage");
    let used = AiUsage::decode(envelope.payload.unwrap().value.as_slice()).unwrap();
    assert_eq!(used.user_id, learner_id);
    assert!(used.completion_tokens >= 1, "{used:?}");
    // Ten output tokens at 1 USD per million were reserved; fewer were streamed.
    assert!(
        used.cost_nano_usd > 0 && used.cost_nano_usd < 10_000,
        "{used:?}"
    );
    let (_, usage) = p
        .call(Method::GET, "/v1/ai/usage", Some(&learner), None)
        .await;
    assert_eq!(usage["requests_today"], "1", "{usage}");
    assert_eq!(
        usage["recent"][0]["completion_tokens"], used.completion_tokens,
        "{usage}"
    );
    let spent = usage["spent_usd"].as_f64().unwrap();
    assert!(
        (spent - used.cost_nano_usd as f64 / 1e9).abs() < 1e-12,
        "the budget holds what was streamed, not the reservation: {usage}"
    );
    p.stop().await;
}
