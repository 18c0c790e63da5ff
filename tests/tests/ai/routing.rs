//! Routing, reload, caching, breakers and streaming on one platform over the mocks.

use std::time::Duration;

use duovarsity_testkit::TestPlatform;
use duovarsity_testkit::llm::Behaviour;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Mocks, ask, chat, learner_of_tier, platform, stream, wait_until};

struct Setup {
    m: Mocks,
    p: TestPlatform,
}

impl Setup {
    async fn start() -> Self {
        let m = Mocks::start().await;
        let p = platform(&m.file, &[]).await;
        Self { m, p }
    }

    fn rewrite(&self, default_model: &str) {
        std::fs::write(&self.m.file, self.m.catalog(default_model)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_follows_tier_task_and_floor_and_the_catalog_reloads_live() {
    let s = Setup::start().await;
    let free = learner_of_tier(&s.p, "free@example.com", "TIER_FREE").await;
    let premium = learner_of_tier(&s.p, "premium@example.com", "TIER_PREMIUM").await;

    // Free, chat: the cheapest model over the floor. Premium: the best.
    let (status, model, cache, body) = chat(&s.p, &free, ask("auto", "what is a closure?")).await;
    assert_eq!(
        (status, model.as_str(), cache.as_str()),
        (StatusCode::OK, "model-a", "miss"),
        "{body}"
    );
    assert_eq!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .split(' ')
            .count(),
        10
    );
    assert_eq!(body["usage"]["completion_tokens"], 10);
    let (_, model, _, _) = chat(&s.p, &premium, ask("auto", "what is a closure?")).await;
    assert_eq!(model, "model-premium");
    // A task alias: grading's floor (75) still admits model-a for free learners.
    let (_, model, _, _) = chat(&s.p, &free, ask("grading", "grade: fn main() {}")).await;
    assert_eq!(model, "model-a");
    // An explicit model outside the tier is refused; an unknown one is not found.
    let (status, _, _, problem) = chat(&s.p, &free, ask("model-premium", "hi")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["reason"], "MODEL_NOT_IN_TIER");
    let (status, _, _, _) = chat(&s.p, &free, ask("gpt-9", "hi")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Anthropic, translated: the answer and its usage in OpenAI's shape.
    let (status, model, _, body) = chat(&s.p, &free, ask("model-claude", "hi")).await;
    assert_eq!(
        (status, model.as_str()),
        (StatusCode::OK, "model-claude"),
        "{body}"
    );
    assert!(
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("up-model-claude:")
    );
    assert_eq!(body["usage"]["completion_tokens"], 10);
    assert_eq!(body["usage"]["prompt_tokens"], 10);
    let claude_request = &s.m.claude.requests()[0];
    assert_eq!(claude_request["messages"][0]["role"], "user");

    // The models list shows what the tier may name.
    let (_, models) =
        s.p.call(Method::GET, "/v1/ai/models", Some(&free), None)
            .await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"model-a") && !ids.contains(&"model-premium"),
        "{ids:?}"
    );

    // A new default model without a restart; then a broken file changes nothing.
    let (_, model, _, _) = chat(&s.p, &free, ask("default", "hello")).await;
    assert_eq!(model, "model-a");
    s.rewrite("model-b");
    wait_until("the new default model", || async {
        chat(&s.p, &free, ask("default", "hello")).await.1 == "model-b"
    })
    .await;
    std::fs::write(&s.m.file, "[policy]\ndefault_model = 3\n").unwrap();
    wait_until("the refused reload to be counted", || async {
        s.p.metrics()
            .await
            .contains("ai_catalog_reloads_total{outcome=\"refused\"}")
    })
    .await;
    assert_eq!(
        chat(&s.p, &free, ask("default", "hello")).await.1,
        "model-b"
    );
    s.p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hits_cost_nothing_and_every_parameter_changes_the_key() {
    let s = Setup::start().await;
    let learner = learner_of_tier(&s.p, "cache@example.com", "TIER_FREE").await;
    let mut exact = ask("model-a", "define recursion");
    exact["temperature"] = json!(0);
    let (_, _, cache, _) = chat(&s.p, &learner, exact.clone()).await;
    assert_eq!(cache, "miss");
    let (_, _, cache, body) = chat(&s.p, &learner, exact.clone()).await;
    assert_eq!(cache, "hit", "{body}");
    assert_eq!(body["cached"], true);
    assert_eq!(s.m.primary.calls(), 1, "one provider call for two answers");
    for (field, value) in [
        ("max_tokens", json!(5)),
        ("top_p", json!(0.5)),
        ("seed", json!(7)),
        ("stop", json!(["\n"])),
        ("presence_penalty", json!(0.2)),
        ("response_format", json!({"type": "json_object"})),
    ] {
        let mut changed = exact.clone();
        changed[field] = value;
        assert_eq!(chat(&s.p, &learner, changed).await.2, "miss", "{field}");
    }
    // A warm request is never cached.
    let mut warm = exact.clone();
    warm["temperature"] = json!(0.8);
    assert_eq!(chat(&s.p, &learner, warm.clone()).await.2, "miss");
    assert_eq!(chat(&s.p, &learner, warm).await.2, "miss");
    // A hint asked with no words of the learner's own is built from the task and the
    // lesson alone, so another learner's identical task shares it.
    let (_, admin) = s.p.sign_in(duovarsity_testkit::TEST_ADMIN).await;
    let (course, lesson) = s.p.course_with_lesson(&admin, "cache-course").await;
    s.p.publish(&admin, &course).await;
    let hint = json!({"model": "hint", "messages": [],
                      "task": {"kind": "hint", "lesson_id": lesson, "exercise_id": "ex-2", "hint_level": 1}});
    assert_eq!(chat(&s.p, &learner, hint.clone()).await.2, "miss");
    let other = learner_of_tier(&s.p, "cache-2@example.com", "TIER_FREE").await;
    assert_eq!(chat(&s.p, &other, hint.clone()).await.2, "hit");
    // The hit cost nothing: usage says so.
    let (_, usage) =
        s.p.call(Method::GET, "/v1/ai/usage", Some(&other), None)
            .await;
    assert_eq!(usage["recent"][0]["cached"], true, "{usage}");
    assert_eq!(usage["recent"][0]["cost_usd"], 0.0);
    assert_eq!(usage["spent_usd"], 0.0);
    assert_eq!(usage["cache_hits_today"], "1");
    s.p.stop().await;
}

/// A whole answer is asked for whole, and a server that answers a stream request with
/// one JSON completion is still understood; empty optional fields stay out of answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_answers_are_asked_for_whole_and_understood_when_a_stream_was_asked() {
    let s = Setup::start().await;
    let learner = learner_of_tier(&s.p, "whole@example.com", "TIER_FREE").await;
    let (status, model, _, body) = chat(&s.p, &learner, ask("model-a", "whole, please")).await;
    assert_eq!(
        (status, model.as_str()),
        (StatusCode::OK, "model-a"),
        "{body}"
    );
    let asked = s.m.primary.requests().pop().unwrap();
    assert_eq!(asked["stream"], false, "{asked}");
    assert!(asked.get("stream_options").is_none(), "{asked}");
    let message = &body["choices"][0]["message"];
    assert_eq!(message["role"], "assistant", "{body}");
    assert!(!message["content"].as_str().unwrap().is_empty(), "{body}");
    assert!(message.get("name").is_none(), "no empty name: {body}");
    assert!(
        body["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{body}"
    );

    // Streamed to the caller, answered whole by the server: the same text arrives as
    // chunks and the stream ends properly.
    s.m.primary.set(Behaviour::AnswerWhole);
    let (status, model, events) = stream(&s.p, &learner, ask("model-a", "stream it")).await;
    assert_eq!(
        (status, model.as_str()),
        (StatusCode::OK, "model-a"),
        "{events:?}"
    );
    assert_eq!(s.m.primary.requests().pop().unwrap()["stream"], true);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{events:?}"
    );
    let text: String = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(!text.is_empty(), "{events:?}");
    s.p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_opens_the_breaker_the_fallback_answers_and_recovery_closes_it() {
    let s = Setup::start().await;
    let learner = learner_of_tier(&s.p, "breaker@example.com", "TIER_FREE").await;
    // A stream without a first token within the policy's 2 s: the next model answers.
    s.m.primary.set_latency(Duration::from_secs(3));
    let (status, model, events) = stream(&s.p, &learner, ask("auto", "slow?")).await;
    assert_eq!(
        (status, model.as_str()),
        (StatusCode::OK, "model-b"),
        "{events:?}"
    );
    s.m.primary.set_latency(Duration::ZERO);
    s.m.primary.set(Behaviour::Down);
    for _ in 0..2 {
        let (status, model, _, body) = chat(&s.p, &learner, ask("auto", "hi")).await;
        assert_eq!(
            (status, model.as_str()),
            (StatusCode::OK, "model-b"),
            "{body}"
        );
    }
    // Failures in a row opened primary's breaker: it is no longer called. (Its gauge,
    // ai_breaker_state, is process-wide and shared with the tests running beside this
    // one, so the test asserts the behaviour.)
    let called = s.m.primary.calls();
    let (_, model, _, _) = chat(&s.p, &learner, ask("auto", "hi")).await;
    assert_eq!(model, "model-b");
    assert_eq!(s.m.primary.calls(), called, "an open breaker is not called");
    s.m.primary.set(Behaviour::Answer);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // After open_secs a probe goes through; it succeeds and the breaker closes.
    let (_, model, _, _) = chat(&s.p, &learner, ask("auto", "hi")).await;
    assert_eq!(model, "model-a");
    // Rate limited (429) everywhere: a 503 after the bounded attempts, not a loop.
    s.m.backup.set(Behaviour::RateLimited);
    s.m.primary.set(Behaviour::RateLimited);
    let (status, _, _, problem) = chat(&s.p, &learner, ask("auto", "hi")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    s.p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_with_done_or_with_an_error_never_a_silent_switch() {
    let s = Setup::start().await;
    let learner = learner_of_tier(&s.p, "stream@example.com", "TIER_FREE").await;
    let (status, model, events) = stream(&s.p, &learner, ask("auto", "stream please")).await;
    assert_eq!((status, model.as_str()), (StatusCode::OK, "model-a"));
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["usage"]["completion_tokens"], 10);

    // Broken after the first chunk: the stream ends with an error event, no fallback.
    s.m.primary.set(Behaviour::BreakAfterFirstChunk);
    let (status, _, events) = stream(&s.p, &learner, ask("auto", "stream again")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(events[0].contains("chat.completion.chunk"), "{events:?}");
    let error: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("model-a"),
        "{error}"
    );
    assert!(!events.iter().any(|e| e == "[DONE]"));
    assert_eq!(s.m.backup.calls(), 0, "no silent switch to another model");
    // Refused before any output: a plain problem response, not a stream.
    let (status, _, events) = stream(&s.p, &learner, ask("model-premium", "x")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{events:?}");
    s.p.stop().await;
}

/// The official `openai` Python package against the gateway on the built-in sandbox:
/// a completion (with the router's headers) and a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_works_unchanged() {
    let p = TestPlatform::start().await;
    let (_, token) = p.sign_up("openai-client@example.com").await;
    let script = r#"
import os, openai
client = openai.OpenAI(base_url=os.environ["BASE"], api_key=os.environ["TOKEN"])
raw = client.chat.completions.with_raw_response.create(
    model="hint", messages=[{"role": "user", "content": "my loop never ends"}],
    extra_body={"task": {"kind": "hint", "hint_level": 1}})
answer = raw.parse()
print("model", raw.headers["x-duovarsity-model"], raw.headers["x-duovarsity-cache"], answer.model)
print("usage", answer.usage.prompt_tokens > 0, answer.usage.completion_tokens > 0)
print("text", "sandbox model" in answer.choices[0].message.content)
parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
    model="auto", messages=[{"role": "user", "content": "explain recursion"}], stream=True) if c.choices]
print("stream", len(parts) > 1, "sandbox model" in "".join(parts))
print("models", "auto" in [m.id for m in client.models.list().data])
"#;
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .env("BASE", p.url("/v1/ai"))
        .env("TOKEN", &token)
        .output()
        .expect("python3 runs (scripts/test-deps.sh installs the openai package)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "model tutor-local miss tutor-local",
            "usage True True",
            "text True",
            "stream True True",
            "models True",
        ]
    );
    p.stop().await;
}

/// `duovarsity ai warm` fills the cache with a course's hints and explanations: the
/// first learner to ask already gets a cached answer, at no cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_a_course_makes_the_first_learner_hit_the_cache() {
    let p = TestPlatform::start_with_admin(duovarsity::Component::All, &[]).await;
    let (_, admin) = p.sign_in(duovarsity_testkit::TEST_ADMIN).await;
    let (course, lesson) = p.course_with_lesson(&admin, "warm-course").await;
    p.publish(&admin, &course).await;
    let settings = std::collections::BTreeMap::from([
        (
            "DUOVARSITY_DATA_DIR".to_string(),
            p.data_dir().display().to_string(),
        ),
        (
            "DUOVARSITY_GRPC_ADDR".to_string(),
            p.grpc_addr().to_string(),
        ),
    ]);
    let config = duovarsity_config::Config::from_sources(None, &settings).unwrap();
    let report = duovarsity::warm::warm(&config, "warm-course")
        .await
        .unwrap();
    assert_eq!((report.lessons, report.failed), (1, 0), "{report:?}");
    assert_eq!(
        report.generated + report.cached,
        12,
        "4 tasks x 3 tiers: {report:?}"
    );
    let again = duovarsity::warm::warm(&config, &course).await.unwrap();
    assert_eq!((again.generated, again.cached), (0, 12), "{again:?}");

    let learner = learner_of_tier(&p, "warm-learner@example.com", "TIER_FREE").await;
    let hint = json!({"model": "hint", "messages": [],
                      "task": {"kind": "hint", "lesson_id": lesson, "hint_level": 2}});
    let (status, _, cache, body) = chat(&p, &learner, hint).await;
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "hit"), "{body}");
    // Words of the learner's own make the answer theirs: not the warmed one.
    let own = json!({"model": "hint", "messages": [{"role": "user", "content": "help?"}],
                     "task": {"kind": "hint", "lesson_id": lesson, "hint_level": 2}});
    let (status, _, cache, body) = chat(&p, &learner, own).await;
    assert_eq!((status, cache.as_str()), (StatusCode::OK, "miss"), "{body}");
    p.stop().await;
}
