//! The AI-routing service through the gateway's OpenAI-compatible API, against the
//! testkit's mock providers (OpenAI-compatible and Anthropic): routing by tier and task,
//! hot reload, caching, breakers and fallback, streaming errors, budgets on two replicas
//! sharing Redis, and the official `openai` Python client.

mod budgets;
mod flags;
mod privacy;
mod routing;

use std::time::Duration;

use duovarsity::Component;
use duovarsity_testkit::TestPlatform;
use duovarsity_testkit::llm::MockLlm;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A catalog over two OpenAI-compatible mocks (`primary`, `backup`) and an Anthropic
/// mock (`claude`), with `default_model` and `max_attempts` as given.
fn catalog(
    keys: &std::path::Path,
    primary: &MockLlm,
    backup: &MockLlm,
    claude: &MockLlm,
    default_model: &str,
) -> String {
    format!(
        r#"
[providers.primary]
kind = "openai"
base_url = "{primary}/v1"
api_key_file = "{keys}/primary"

[providers.backup]
kind = "openai"
base_url = "{backup}/v1"
api_key_file = "{keys}/backup"

[providers.claude]
kind = "anthropic"
base_url = "{claude}"
api_key_file = "{keys}/claude"

{models}

[policy]
default_model = "{default_model}"
max_attempts = 3
first_token_timeout_ms = 2000
total_timeout_ms = 5000

{tasks}
[budgets]
daily_usd = {{ free = 1.0, standard = 1.0, premium = 1.0 }}
platform_daily_usd = 1000.0
throttle_at = 1.0

[breaker]
consecutive_failures = 2
failure_rate = 0.9
window = 10
open_secs = 1
"#,
        primary = primary.url(),
        backup = backup.url(),
        claude = claude.url(),
        keys = keys.display(),
        tasks = [
            tasks("hint", true, 50),
            tasks("explanation", true, 50),
            tasks("grading", false, 75),
            tasks("chat", false, 50),
        ]
        .concat(),
        models = [
            model(
                "model-a",
                "primary",
                80,
                1.0,
                r#"["free", "standard", "premium"]"#
            ),
            model(
                "model-b",
                "backup",
                70,
                2.0,
                r#"["free", "standard", "premium"]"#
            ),
            model("model-premium", "primary", 95, 10.0, r#"["premium"]"#),
            model(
                "model-claude",
                "claude",
                30,
                1.5,
                r#"["free", "standard", "premium"]"#
            ),
        ]
        .concat(),
    )
}

/// One task's policy: answers of 64 tokens, `floor` for free and standard learners, 90
/// for premium ones.
pub fn tasks(task: &str, cacheable: bool, floor: u32) -> String {
    format!(
        "[policy.tasks.{task}]\ncacheable = {cacheable}\nmax_tokens = 64\n\
         floor = {{ free = {floor}, standard = {floor}, premium = 90 }}\n\n"
    )
}

/// One model of a test catalog: free input, `output_usd` per million output tokens.
fn model(name: &str, provider: &str, quality: u32, output_usd: f64, tiers: &str) -> String {
    format!(
        r#"
[[models]]
name = "{name}"
provider = "{provider}"
upstream_model = "up-{name}"
input_usd_per_mtok = 0.0
output_usd_per_mtok = {output_usd}
quality = {quality}
requests_per_minute = 10000
tokens_per_minute = 10000000
context_window = 8000
max_output_tokens = 1000
tiers = {tiers}
"#
    )
}

/// Three mock providers (two OpenAI-compatible, one Anthropic) with their keys written
/// into a temporary directory and a catalog over them (`catalog.toml`, default
/// `model-a`) beside the keys.
struct Mocks {
    dir: tempfile::TempDir,
    primary: MockLlm,
    backup: MockLlm,
    claude: MockLlm,
    file: std::path::PathBuf,
}

impl Mocks {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (primary, backup, claude) = (
            MockLlm::openai().await,
            MockLlm::openai().await,
            MockLlm::anthropic().await,
        );
        write_keys(dir.path(), [&primary, &backup, &claude]);
        let file = dir.path().join("catalog.toml");
        let mocks = Self {
            dir,
            primary,
            backup,
            claude,
            file,
        };
        std::fs::write(&mocks.file, mocks.catalog("model-a")).unwrap();
        mocks
    }

    /// The catalog text with `default_model`.
    fn catalog(&self, default_model: &str) -> String {
        catalog(
            self.dir.path(),
            &self.primary,
            &self.backup,
            &self.claude,
            default_model,
        )
    }
}

/// Writes the mocks' keys as files under `dir` (mounted secrets, as in production).
fn write_keys(dir: &std::path::Path, mocks: [&MockLlm; 3]) {
    for (name, mock) in ["primary", "backup", "claude"].iter().zip(mocks) {
        std::fs::write(dir.join(name), &mock.key).unwrap();
    }
}

/// `POST /v1/ai/chat/completions` with `body` as the holder of `token`.
async fn completion(p: &TestPlatform, token: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(p.url("/v1/ai/chat/completions"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// A chat completion through the gateway: status, the model and cache headers, body.
async fn chat(p: &TestPlatform, token: &str, body: Value) -> (StatusCode, String, String, Value) {
    let response = completion(p, token, &body).await;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (model, cache) = (header("x-duovarsity-model"), header("x-duovarsity-cache"));
    let status = response.status();
    (
        status,
        model,
        cache,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// A streamed completion: status, the model header, and the `data:` payloads in order.
async fn stream(
    p: &TestPlatform,
    token: &str,
    mut body: Value,
) -> (StatusCode, String, Vec<String>) {
    body["stream"] = json!(true);
    let response = completion(p, token, &body).await;
    let status = response.status();
    let model = response
        .headers()
        .get("x-duovarsity-model")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = response.text().await.unwrap();
    let events = text
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .map(str::to_string)
        .collect();
    (status, model, events)
}

fn ask(model: &str, question: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": question}]})
}

/// A learner's token after an admin gave them `tier` (`TIER_PREMIUM`, ...).
async fn learner_of_tier(p: &TestPlatform, email: &str, tier: &str) -> String {
    let (id, token) = p.sign_up(email).await;
    if tier == "TIER_FREE" {
        return token;
    }
    p.set_tier(&id, tier).await;
    p.sign_in(email).await.1
}

/// The platform on the mocks with the catalog in `file`.
async fn platform(file: &std::path::Path, extra: &[(&'static str, String)]) -> TestPlatform {
    let mut settings = vec![("DUOVARSITY_AI_CATALOG_FILE", file.display().to_string())];
    settings.extend(extra.iter().cloned());
    let settings: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestPlatform::start_with_admin(Component::All, &settings).await
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 10 s");
}
