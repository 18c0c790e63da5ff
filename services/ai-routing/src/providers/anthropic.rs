//! Anthropic's Messages API, translated to and from the OpenAI shape: system messages
//! become `system`, `stop` becomes `stop_sequences`, and the streamed events
//! (`message_start` with the input tokens, `content_block_delta` text, `message_delta`
//! with the stop reason and output tokens, `message_stop`, `error`) become pieces.

use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{CallError, ModelApi, Piece, Pieces, Prompt, Tokens, checked, events, unreachable};
use crate::catalog::ProviderSpec;

/// The API version the client speaks.
pub const VERSION: &str = "2023-06-01";

pub struct Anthropic {
    spec: ProviderSpec,
    http: reqwest::Client,
}

impl Anthropic {
    pub fn new(spec: ProviderSpec, http: reqwest::Client) -> Self {
        Self { spec, http }
    }
}

pub fn body(upstream_model: &str, prompt: &Prompt) -> Value {
    let system: Vec<&str> = prompt
        .messages
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.as_str())
        .collect();
    let messages: Vec<Value> = prompt
        .messages
        .iter()
        .filter(|m| m.role != "system")
        .map(|m| {
            let role = if m.role == "assistant" {
                "assistant"
            } else {
                "user"
            };
            json!({"role": role, "content": m.content})
        })
        .collect();
    let mut body = json!({
        "model": upstream_model,
        "max_tokens": prompt.max_tokens,
        "messages": messages,
        "stream": true,
    });
    if !system.is_empty() {
        body["system"] = Value::from(system.join("\n\n"));
    }
    if let Some(t) = prompt.temperature {
        body["temperature"] = Value::from(t);
    }
    if let Some(p) = prompt.top_p {
        body["top_p"] = Value::from(p);
    }
    if !prompt.stop.is_empty() {
        body["stop_sequences"] = Value::from(prompt.stop.clone());
    }
    body
}

/// One event of a Messages stream, as Anthropic documents it (the `type` field names it).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockDelta {
        delta: ContentDelta,
    },
    MessageDelta {
        delta: MessageChange,
        usage: Option<OutputUsage>,
    },
    MessageStop,
    Error {
        error: ApiError,
    },
    /// `ping`, `content_block_start`, `content_block_stop` and types added later.
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct StartedMessage {
    #[serde(default)]
    usage: InputUsage,
}

#[derive(Debug, Default, Deserialize)]
struct InputUsage {
    #[serde(default)]
    input_tokens: u32,
}

/// A text delta (`text_delta`); other deltas (tool input) carry no text.
#[derive(Debug, Deserialize)]
struct ContentDelta {
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MessageChange {
    stop_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OutputUsage {
    #[serde(default)]
    output_tokens: u32,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default = "unnamed_error")]
    message: String,
}

fn unnamed_error() -> String {
    "error".into()
}

/// Anthropic's stop reason in OpenAI's words.
fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        _ => "stop",
    }
}

#[async_trait::async_trait]
impl ModelApi for Anthropic {
    async fn open(&self, upstream_model: &str, prompt: &Prompt) -> Result<Pieces, CallError> {
        let mut request = self
            .http
            .post(format!("{}/v1/messages", self.spec.base_url))
            .header("anthropic-version", VERSION)
            .json(&body(upstream_model, prompt));
        if let Some(key) = &self.spec.api_key {
            request = request.header("x-api-key", key.expose());
        }
        let response = checked(request.send().await.map_err(unreachable)?).await?;
        let stream = events(response);
        let pieces = futures::stream::unfold(
            (
                Box::pin(stream),
                Tokens::default(),
                "stop".to_string(),
                false,
            ),
            |(mut stream, mut tokens, mut finish, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let event = match stream.next().await {
                        Some(Ok(event)) => event,
                        Some(Err(error)) => {
                            return Some((Err(error), (stream, tokens, finish, true)));
                        }
                        None => {
                            let error = CallError::Unavailable(
                                "the stream ended without message_stop".into(),
                            );
                            return Some((Err(error), (stream, tokens, finish, true)));
                        }
                    };
                    // Unknown types are `Other`; a known type in a shape this build
                    // cannot read ends the answer with an error that says so.
                    let data = match serde_json::from_str::<StreamEvent>(&event.data) {
                        Ok(data) => data,
                        Err(error) => {
                            let error = CallError::Unavailable(format!(
                                "an unreadable stream event: {error}"
                            ));
                            return Some((Err(error), (stream, tokens, finish, true)));
                        }
                    };
                    match data {
                        StreamEvent::MessageStart { message } => {
                            tokens.prompt = message.usage.input_tokens;
                        }
                        StreamEvent::ContentBlockDelta { delta } => {
                            if let Some(text) = delta.text {
                                let text = Piece::Text(text);
                                return Some((Ok(text), (stream, tokens, finish, false)));
                            }
                        }
                        StreamEvent::MessageDelta { delta, usage } => {
                            if let Some(reason) = delta.stop_reason {
                                finish = finish_reason(&reason).to_string();
                            }
                            if let Some(usage) = usage {
                                tokens.completion = usage.output_tokens;
                            }
                        }
                        StreamEvent::MessageStop => {
                            let end = Piece::End {
                                finish_reason: finish.clone(),
                                usage: Some(tokens),
                            };
                            return Some((Ok(end), (stream, tokens, finish, true)));
                        }
                        StreamEvent::Error { error } => {
                            let error = if error.kind == "overloaded_error" {
                                CallError::Unavailable(error.message)
                            } else {
                                CallError::Rejected(error.message)
                            };
                            return Some((Err(error), (stream, tokens, finish, true)));
                        }
                        // ping, content_block_start, content_block_stop
                        StreamEvent::Other => {}
                    }
                }
            },
        );
        Ok(pieces.boxed())
    }
}
