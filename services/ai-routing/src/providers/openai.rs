//! OpenAI's Chat Completions API and every server that speaks it (vLLM, llama.cpp,
//! Ollama; Azure OpenAI with its deployment URL, `api-key` header and `api-version`).
//! Streamed when the caller streams, with `stream_options.include_usage` so the last
//! chunk carries the token counts; otherwise asked for whole. A JSON answer is read as a
//! whole completion whichever was asked (some compatible servers never stream).

use futures::StreamExt;
use serde::Deserialize;
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

/// A completion (`chat.completion`) or one streamed chunk of it
/// (`chat.completion.chunk`), as OpenAI documents them; an error answer has `error`.
#[derive(Debug, Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
    error: Option<ApiError>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    /// The whole answer's message.
    message: Option<Content>,
    /// A chunk's part of it.
    delta: Option<Content>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Content {
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

#[derive(Debug, Deserialize)]
struct ApiError {
    message: String,
}

impl Completion {
    fn failure(&self) -> Option<CallError> {
        self.error
            .as_ref()
            .map(|error| CallError::Unavailable(error.message.clone()))
    }

    /// What it says: its text (the message's, or the chunk's delta), and its finish
    /// reason and token counts when it has them.
    fn pieces(self, finish: &mut Option<String>, usage: &mut Option<Tokens>) -> Vec<Piece> {
        let mut pieces = Vec::new();
        if let Some(choice) = self.choices.into_iter().next() {
            let text = choice.message.or(choice.delta).and_then(|c| c.content);
            if let Some(text) = text.filter(|text| !text.is_empty()) {
                pieces.push(Piece::Text(text));
            }
            if let Some(reason) = choice.finish_reason {
                *finish = Some(reason);
            }
        }
        if let Some(counts) = self.usage {
            *usage = Some(Tokens {
                prompt: counts.prompt_tokens,
                completion: counts.completion_tokens,
            });
        }
        pieces
    }
}

/// A whole completion as pieces: its text, then its end.
fn whole(completion: Completion) -> Result<Vec<Piece>, CallError> {
    if let Some(error) = completion.failure() {
        return Err(error);
    }
    if completion.choices.is_empty() {
        return Err(CallError::Unavailable(
            "a completion without choices".into(),
        ));
    }
    let (mut finish, mut usage) = (None, None);
    let mut pieces = completion.pieces(&mut finish, &mut usage);
    pieces.push(Piece::End {
        finish_reason: finish.unwrap_or_else(|| "stop".into()),
        usage,
    });
    Ok(pieces)
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
            let completion: Completion = response.json().await.map_err(|error| {
                CallError::Unavailable(format!("an unreadable completion: {error}"))
            })?;
            let pieces = whole(completion)?;
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
                            let chunk: Completion = match serde_json::from_str(&event.data) {
                                Ok(chunk) => chunk,
                                Err(error) => {
                                    let error = CallError::Unavailable(format!(
                                        "an unreadable chunk: {error}"
                                    ));
                                    return Some((vec![Err(error)], (stream, finish, usage, true)));
                                }
                            };
                            if let Some(error) = chunk.failure() {
                                return Some((vec![Err(error)], (stream, finish, usage, true)));
                            }
                            let pieces = chunk.pieces(&mut finish, &mut usage);
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
