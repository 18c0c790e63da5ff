//! OpenAI's Chat Completions API and every server that speaks it (vLLM, llama.cpp,
//! Ollama; Azure OpenAI with its deployment URL, `api-key` header and `api-version`).
//! Streamed when the caller streams, with `stream_options.include_usage` so the last
//! chunk carries the token counts; otherwise asked for whole. A JSON answer is read as a
//! whole completion whichever was asked (some compatible servers never stream).

use futures::StreamExt;
use serde_json::{Value, json};

use super::{CallError, ModelApi, Piece, Pieces, Prompt, Tokens, checked, events, unreachable};
use crate::catalog::{ProviderKind, ProviderSpec};

pub struct OpenAi {
    spec: ProviderSpec,
    http: reqwest::Client,
}

impl OpenAi {
    pub fn new(spec: ProviderSpec, http: reqwest::Client) -> Self {
        Self { spec, http }
    }
}

/// The request body in OpenAI's shape.
pub fn body(upstream_model: &str, prompt: &Prompt) -> Value {
    let mut body = json!({
        "model": upstream_model,
        "messages": prompt.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
        "max_tokens": prompt.max_tokens,
        "stream": prompt.stream,
    });
    if prompt.stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    let fields = [
        ("temperature", prompt.temperature.map(Value::from)),
        ("top_p", prompt.top_p.map(Value::from)),
        ("seed", prompt.seed.map(Value::from)),
        ("presence_penalty", prompt.presence_penalty.map(Value::from)),
        (
            "frequency_penalty",
            prompt.frequency_penalty.map(Value::from),
        ),
        ("response_format", prompt.response_format.clone()),
        (
            "stop",
            (!prompt.stop.is_empty()).then(|| Value::from(prompt.stop.clone())),
        ),
        (
            "tools",
            (!prompt.tools.is_empty()).then(|| Value::from(prompt.tools.clone())),
        ),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            body[name] = value;
        }
    }
    body
}

/// A whole completion (`chat.completion`) as pieces: its text, then its end.
fn whole(completion: &Value) -> Result<Vec<Piece>, CallError> {
    if let Some(message) = completion["error"]["message"].as_str() {
        return Err(CallError::Unavailable(message.to_string()));
    }
    let choice = completion["choices"]
        .get(0)
        .ok_or_else(|| CallError::Unavailable("a completion without choices".into()))?;
    let mut pieces = Vec::new();
    if let Some(text) = choice["message"]["content"].as_str()
        && !text.is_empty()
    {
        pieces.push(Piece::Text(text.to_string()));
    }
    let mut finish = choice["finish_reason"].as_str().map(str::to_string);
    let mut usage = None;
    pieces_of(
        &json!({"usage": completion["usage"]}),
        &mut finish,
        &mut usage,
    );
    pieces.push(Piece::End {
        finish_reason: finish.unwrap_or_else(|| "stop".into()),
        usage,
    });
    Ok(pieces)
}

/// What one streamed chunk says.
fn pieces_of(chunk: &Value, finish: &mut Option<String>, usage: &mut Option<Tokens>) -> Vec<Piece> {
    let mut pieces = Vec::new();
    if let Some(choice) = chunk["choices"].get(0) {
        if let Some(text) = choice["delta"]["content"].as_str()
            && !text.is_empty()
        {
            pieces.push(Piece::Text(text.to_string()));
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            *finish = Some(reason.to_string());
        }
    }
    if let Some(counts) = chunk.get("usage").filter(|u| u.is_object()) {
        *usage = Some(Tokens {
            prompt: counts["prompt_tokens"].as_u64().unwrap_or(0) as u32,
            completion: counts["completion_tokens"].as_u64().unwrap_or(0) as u32,
        });
    }
    pieces
}

#[async_trait::async_trait]
impl ModelApi for OpenAi {
    async fn open(&self, upstream_model: &str, prompt: &Prompt) -> Result<Pieces, CallError> {
        let url = format!("{}/chat/completions", self.spec.base_url);
        let mut request = self.http.post(&url).json(&body(upstream_model, prompt));
        if self.spec.kind == ProviderKind::Azure {
            request = request.query(&[(
                "api-version",
                self.spec.api_version.as_deref().unwrap_or_default(),
            )]);
            if let Some(key) = &self.spec.api_key {
                request = request.header("api-key", key.expose());
            }
        } else if let Some(key) = &self.spec.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = checked(request.send().await.map_err(unreachable)?).await?;
        let json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if json {
            let completion: Value = response.json().await.map_err(|error| {
                CallError::Unavailable(format!("an unreadable completion: {error}"))
            })?;
            let pieces = whole(&completion)?;
            return Ok(futures::stream::iter(pieces.into_iter().map(Ok)).boxed());
        }
        let stream = events(response);
        let pieces = futures::stream::unfold(
            (Box::pin(stream), None::<String>, None::<Tokens>, false),
            |(mut stream, mut finish, mut usage, done)| async move {
                if done {
                    return None;
                }
                loop {
                    match stream.next().await {
                        Some(Ok(event)) if event.data.trim() == "[DONE]" => {
                            let end = Piece::End {
                                finish_reason: finish.clone().unwrap_or_else(|| "stop".into()),
                                usage,
                            };
                            return Some((vec![Ok(end)], (stream, finish, usage, true)));
                        }
                        Some(Ok(event)) => {
                            let chunk: Value = match serde_json::from_str(&event.data) {
                                Ok(chunk) => chunk,
                                Err(error) => {
                                    let error = CallError::Unavailable(format!(
                                        "an unreadable chunk: {error}"
                                    ));
                                    return Some((vec![Err(error)], (stream, finish, usage, true)));
                                }
                            };
                            if let Some(message) = chunk["error"]["message"].as_str() {
                                let error = CallError::Unavailable(message.to_string());
                                return Some((vec![Err(error)], (stream, finish, usage, true)));
                            }
                            let pieces = pieces_of(&chunk, &mut finish, &mut usage);
                            if !pieces.is_empty() {
                                return Some((
                                    pieces.into_iter().map(Ok).collect(),
                                    (stream, finish, usage, false),
                                ));
                            }
                        }
                        Some(Err(error)) => {
                            return Some((vec![Err(error)], (stream, finish, usage, true)));
                        }
                        None => {
                            let error =
                                CallError::Unavailable("the stream ended without [DONE]".into());
                            return Some((vec![Err(error)], (stream, finish, usage, true)));
                        }
                    }
                }
            },
        )
        .flat_map(futures::stream::iter);
        Ok(pieces.boxed())
    }
}
