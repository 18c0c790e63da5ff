//! Model provider APIs of a test's own, on free ports of 127.0.0.1: an OpenAI-compatible
//! `POST /v1/chat/completions` ([`MockLlm::openai`]) and Anthropic's `POST /v1/messages`
//! ([`MockLlm::anthropic`]), streaming as their providers do (OpenAI answers whole when
//! not asked to stream), with controls a test uses to make them slow, failing, rate
//! limited, break after the first chunk, or answer whole when asked to stream.
//!
//! Every answer has exactly `completion_tokens` words (a token each in the reported
//! usage, capped by the request's max tokens), so tests can compute costs exactly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt as _;
use serde_json::{Value, json};

/// What the next calls do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Answer,
    /// HTTP 503 at once.
    Down,
    /// HTTP 429 at once.
    RateLimited,
    /// The first chunk, then the connection ends mid-answer.
    BreakAfterFirstChunk,
    /// The first chunk, then nothing more (the answer never ends on its own).
    StallAfterFirstChunk,
    /// A whole JSON completion even when a stream was asked for (OpenAI dialect), as some
    /// compatible servers answer.
    AnswerWhole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    OpenAi,
    Anthropic,
}

struct Controls {
    dialect: Dialect,
    key: String,
    behaviour: Behaviour,
    latency: Duration,
    completion_tokens: u32,
    requests: Vec<Value>,
}

pub struct MockLlm {
    server: crate::MockServer,
    controls: Arc<Mutex<Controls>>,
    /// The API key it expects (`Authorization: Bearer` or `x-api-key`).
    pub key: String,
}

type Shared = Arc<Mutex<Controls>>;

fn words(model: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| {
            if n == 0 {
                format!("{model}:")
            } else {
                format!("w{n}")
            }
        })
        .collect()
}

fn sse(events: Vec<String>, behaviour: Behaviour) -> Response {
    let body = match behaviour {
        // Only the first event, and the stream ends without its terminator.
        Behaviour::BreakAfterFirstChunk => {
            Body::from(events.into_iter().next().unwrap_or_default())
        }
        // The first event, then a stream that stays open and silent.
        Behaviour::StallAfterFirstChunk => {
            let first = events.into_iter().next().unwrap_or_default();
            let stream =
                futures::stream::once(async move { Ok::<_, std::convert::Infallible>(first) })
                    .chain(futures::stream::pending());
            Body::from_stream(stream)
        }
        _ => Body::from(events.concat()),
    };
    let mut response = Response::new(body);
    response.headers_mut().insert(
        "content-type",
        "text/event-stream".parse().expect("a header"),
    );
    response
}

async fn answer(
    State(controls): State<Shared>,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Response {
    let (dialect, behaviour, latency, tokens, key) = {
        let mut c = controls.lock().expect("mock llm lock");
        c.requests.push(request.clone());
        (
            c.dialect,
            c.behaviour,
            c.latency,
            c.completion_tokens,
            c.key.clone(),
        )
    };
    let presented = match dialect {
        Dialect::OpenAi => headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string),
        Dialect::Anthropic => headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    };
    if presented.as_deref() != Some(key.as_str()) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "bad key"}})),
        )
            .into_response();
    }
    tokio::time::sleep(latency).await;
    match behaviour {
        Behaviour::Down => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": {"message": "overloaded"}})),
            )
                .into_response();
        }
        Behaviour::RateLimited => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"error": {"message": "rate limited"}})),
            )
                .into_response();
        }
        Behaviour::Answer
        | Behaviour::AnswerWhole
        | Behaviour::BreakAfterFirstChunk
        | Behaviour::StallAfterFirstChunk => {}
    }
    let model = request["model"].as_str().unwrap_or("model").to_string();
    let cap = request["max_tokens"].as_u64().unwrap_or(u64::from(tokens)) as u32;
    let count = tokens.min(cap) as usize;
    let finish = if count < tokens as usize {
        "length"
    } else {
        "stop"
    };
    let prompt_tokens = request["messages"].as_array().map_or(0, Vec::len) * 10;
    let text = words(&model, count);
    let cut = matches!(
        behaviour,
        Behaviour::BreakAfterFirstChunk | Behaviour::StallAfterFirstChunk
    );
    let whole = request["stream"] != json!(true) || behaviour == Behaviour::AnswerWhole;
    match dialect {
        Dialect::OpenAi if whole => Json(json!({
            "id": "chatcmpl-mock", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text.join(" ")},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": count,
                      "total_tokens": prompt_tokens + count},
        }))
        .into_response(),
        Dialect::OpenAi => {
            let chunk = |delta: Value, finish: Value, usage: Value| {
                format!(
                    "data: {}\n\n",
                    json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": usage})
                )
            };
            let mut events: Vec<String> = text
                .iter()
                .enumerate()
                .map(|(n, word)| {
                    let content = if n == 0 {
                        word.clone()
                    } else {
                        format!(" {word}")
                    };
                    chunk(json!({"content": content}), Value::Null, Value::Null)
                })
                .collect();
            events.push(chunk(json!({}), json!(finish), Value::Null));
            events.push(format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model, "choices": [],
                       "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": count, "total_tokens": prompt_tokens + count}})
            ));
            events.push("data: [DONE]\n\n".to_string());
            sse(events, behaviour)
        }
        Dialect::Anthropic => {
            let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
            let mut events = vec![event(
                "message_start",
                json!({"type": "message_start", "message": {"model": model, "usage": {"input_tokens": prompt_tokens, "output_tokens": 1}}}),
            )];
            for (n, word) in text.iter().enumerate() {
                let piece = if n == 0 {
                    word.clone()
                } else {
                    format!(" {word}")
                };
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
            let reason = if finish == "length" {
                "max_tokens"
            } else {
                "end_turn"
            };
            events.push(event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": reason}, "usage": {"output_tokens": count}}),
            ));
            events.push(event("message_stop", json!({"type": "message_stop"})));
            if cut {
                events.remove(0);
            }
            sse(events, behaviour)
        }
    }
}

impl MockLlm {
    async fn start(dialect: Dialect, path: &str) -> Self {
        let key = format!("sk-mock-{}", uuid::Uuid::now_v7().simple());
        let controls = Arc::new(Mutex::new(Controls {
            dialect,
            key: key.clone(),
            behaviour: Behaviour::Answer,
            latency: Duration::ZERO,
            completion_tokens: 10,
            requests: Vec::new(),
        }));
        let router = Router::new()
            .route(path, post(answer))
            .with_state(controls.clone());
        Self {
            server: crate::MockServer::serve(router).await,
            controls,
            key,
        }
    }

    /// An OpenAI-compatible server; its base URL for the catalog is [`Self::url`] + `/v1`.
    pub async fn openai() -> Self {
        Self::start(Dialect::OpenAi, "/v1/chat/completions").await
    }

    /// Anthropic's Messages API; its base URL for the catalog is [`Self::url`].
    pub async fn anthropic() -> Self {
        Self::start(Dialect::Anthropic, "/v1/messages").await
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn set(&self, behaviour: Behaviour) {
        self.controls.lock().expect("mock llm lock").behaviour = behaviour;
    }

    /// Waits this long before answering (the first byte).
    pub fn set_latency(&self, latency: Duration) {
        self.controls.lock().expect("mock llm lock").latency = latency;
    }

    /// Words (and completion tokens) per answer, before the request's max tokens.
    pub fn set_completion_tokens(&self, tokens: u32) {
        self.controls
            .lock()
            .expect("mock llm lock")
            .completion_tokens = tokens;
    }

    /// How many requests it received.
    pub fn calls(&self) -> usize {
        self.controls.lock().expect("mock llm lock").requests.len()
    }

    /// The request bodies it received, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.controls
            .lock()
            .expect("mock llm lock")
            .requests
            .clone()
    }
}

/// An AI catalog with one model, `name`, on `mock` (its key in `key_file`): free input,
/// `output_usd_per_mtok` per million output tokens, answers capped at `max_tokens`, no
/// quality floors, one attempt (no fallback), a breaker that never opens, and a daily
/// budget of `daily_usd` for every tier. Costs are exact: every answer of the mock is
/// `max_tokens` output tokens when its own count is at least that.
pub fn one_model_catalog(
    mock: &MockLlm,
    key_file: &std::path::Path,
    name: &str,
    output_usd_per_mtok: f64,
    max_tokens: u32,
    daily_usd: f64,
) -> String {
    let tasks: String = ["hint", "explanation", "grading", "chat"]
        .map(|task| {
            format!(
                "[policy.tasks.{task}]\ncacheable = false\nmax_tokens = {max_tokens}\n\
                 floor = {{ free = 0, standard = 0, premium = 0 }}\n\n"
            )
        })
        .concat();
    format!(
        r#"[providers.only]
kind = "openai"
base_url = "{url}/v1"
api_key_file = "{key}"

[[models]]
name = "{name}"
provider = "only"
upstream_model = "{name}-upstream"
input_usd_per_mtok = 0.0
output_usd_per_mtok = {output_usd_per_mtok}
quality = 80
requests_per_minute = 10000000
tokens_per_minute = 1000000000
context_window = 8000
max_output_tokens = {max_tokens}
tiers = ["free", "standard", "premium"]

[policy]
default_model = "{name}"
max_attempts = 1
first_token_timeout_ms = 10000
total_timeout_ms = 20000

{tasks}[budgets]
daily_usd = {{ free = {daily_usd}, standard = {daily_usd}, premium = {daily_usd} }}
platform_daily_usd = 100000.0
throttle_at = 1.0

[breaker]
consecutive_failures = 1000000
failure_rate = 1.0
window = 1000
open_secs = 1
"#,
        url = mock.url(),
        key = key_file.display(),
    )
}
