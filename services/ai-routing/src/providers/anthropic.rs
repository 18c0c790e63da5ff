//! Anthropic's Messages API, translated to and from the OpenAI shape: system messages
//! become `system`, `stop` becomes `stop_sequences`, and the streamed events
//! (`message_start` with the input tokens, `content_block_delta` text, `message_delta`
//! with the stop reason and output tokens, `message_stop`, `error`) become pieces.

use futures::StreamExt;
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
                    let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                    match data["type"].as_str().unwrap_or_default() {
                        "message_start" => {
                            tokens.prompt = data["message"]["usage"]["input_tokens"]
                                .as_u64()
                                .unwrap_or(0) as u32;
                        }
                        "content_block_delta" => {
                            if let Some(text) = data["delta"]["text"].as_str() {
                                let text = Piece::Text(text.to_string());
                                return Some((Ok(text), (stream, tokens, finish, false)));
                            }
                        }
                        "message_delta" => {
                            if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                                finish = finish_reason(reason).to_string();
                            }
                            if let Some(out) = data["usage"]["output_tokens"].as_u64() {
                                tokens.completion = out as u32;
                            }
                        }
                        "message_stop" => {
                            let end = Piece::End {
                                finish_reason: finish.clone(),
                                usage: Some(tokens),
                            };
                            return Some((Ok(end), (stream, tokens, finish, true)));
                        }
                        "error" => {
                            let message = data["error"]["message"]
                                .as_str()
                                .unwrap_or("error")
                                .to_string();
                            let error = if data["error"]["type"] == "overloaded_error" {
                                CallError::Unavailable(message)
                            } else {
                                CallError::Rejected(message)
                            };
                            return Some((Err(error), (stream, tokens, finish, true)));
                        }
                        // ping, content_block_start, content_block_stop
                        _ => {}
                    }
                }
            },
        );
        Ok(pieces.boxed())
    }
}
