//! What the router asks of a model provider: open a streamed answer for a prompt. Every
//! provider is a real streaming HTTP client of its API ([`openai`]: OpenAI, Azure OpenAI
//! and compatible servers; [`anthropic`]: the Messages API, translated to and from the
//! OpenAI shape), except the built-in offline [`sandbox`]. A provider is asked for a
//! stream only when the caller streams ([`Prompt::stream`]); an answer that comes whole
//! (asked for whole, or a server that answers JSON to a streaming request) is turned
//! into the same pieces, so the router sees one shape.
//!
//! Errors say what the router may do: [`CallError::Unavailable`], `RateLimited` and
//! `Timeout` before the first token fall back to the next model; `Rejected` (a 4xx other
//! than 429: the request itself is wrong) does not.

pub mod anthropic;
pub mod openai;
pub mod sandbox;

use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde_json::Value;

use crate::catalog::{ProviderKind, ProviderSpec};

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A chat request as the router sends it to a provider.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Prompt {
    pub messages: Vec<Message>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_tokens: u32,
    pub stop: Vec<String>,
    pub seed: Option<i64>,
    pub tools: Vec<Value>,
    pub response_format: Option<Value>,
    pub presence_penalty: Option<f64>,
    pub frequency_penalty: Option<f64>,
    /// Whether the caller reads the answer as it is generated: the provider is asked for
    /// a stream only then (an answer read whole is asked for whole, as LiteLLM does).
    pub stream: bool,
}

impl Prompt {
    /// A generous estimate of the prompt's tokens (about four characters a token, plus
    /// each message's framing), for reserving budget before the provider says.
    pub fn estimated_tokens(&self) -> u32 {
        let chars: usize = self
            .messages
            .iter()
            .map(|m| m.content.len() + m.role.len())
            .sum();
        u32::try_from(chars / 3 + 4 * self.messages.len() + 8).unwrap_or(u32::MAX)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    pub prompt: u32,
    pub completion: u32,
}

/// A piece of a streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    /// The answer is complete.
    End {
        finish_reason: String,
        usage: Option<Tokens>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    #[error("the provider's rate limit: {0}")]
    RateLimited(String),
    #[error("the provider did not answer in time: {0}")]
    Timeout(String),
    #[error("the provider refused the request: {0}")]
    Rejected(String),
}

pub type Pieces = BoxStream<'static, Result<Piece, CallError>>;

#[async_trait::async_trait]
pub trait ModelApi: Send + Sync {
    /// Opens the answer of `upstream_model` to `prompt`, streamed.
    async fn open(&self, upstream_model: &str, prompt: &Prompt) -> Result<Pieces, CallError>;
}

/// The client of a catalog provider.
pub fn client(spec: &ProviderSpec, http: &reqwest::Client) -> Arc<dyn ModelApi> {
    match spec.kind {
        ProviderKind::Sandbox => Arc::new(sandbox::Sandbox),
        ProviderKind::Openai | ProviderKind::Azure => {
            Arc::new(openai::OpenAi::new(spec.clone(), http.clone()))
        }
        ProviderKind::Anthropic => Arc::new(anthropic::Anthropic::new(spec.clone(), http.clone())),
    }
}

/// A transport error: nothing was answered.
fn unreachable(error: reqwest::Error) -> CallError {
    // The cause chain says what went wrong ("error sending request" alone does not).
    let timeout = error.is_timeout();
    let error = error.without_url();
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    if timeout {
        CallError::Timeout(detail)
    } else {
        CallError::Unavailable(detail)
    }
}

/// Checks an HTTP answer's status: 429 rate limited, 5xx unavailable, other 4xx rejected
/// (with the start of the provider's body).
async fn checked(response: reqwest::Response) -> Result<reqwest::Response, CallError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    let detail = format!("{status}: {}", body.chars().take(300).collect::<String>());
    Err(if status.as_u16() == 429 {
        CallError::RateLimited(detail)
    } else if status.is_server_error() {
        CallError::Unavailable(detail)
    } else {
        CallError::Rejected(detail)
    })
}

/// One server-sent event: its `event:` name (if any) and its `data:` lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

/// The events of a `text/event-stream` body. SSE framing is a few lines (events end at a
/// blank line; `data:` lines accumulate; comments start with `:`), so it is read here
/// rather than through another dependency.
fn events(response: reqwest::Response) -> impl Stream<Item = Result<Event, CallError>> + Send {
    let bytes = response.bytes_stream();
    futures::stream::unfold(
        (bytes, Vec::<u8>::new(), false),
        |(mut bytes, mut buffer, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(end) = find_event_end(&buffer) {
                    let raw: Vec<u8> = buffer.drain(..end.0 + end.1).collect();
                    let event = parse_event(&raw[..end.0]);
                    match event {
                        Some(event) => return Some((Ok(event), (bytes, buffer, false))),
                        None => continue,
                    }
                }
                match bytes.next().await {
                    Some(Ok(chunk)) => buffer.extend_from_slice(&chunk),
                    Some(Err(error)) => {
                        return Some((Err(unreachable(error)), (bytes, buffer, true)));
                    }
                    None => {
                        let rest = parse_event(&buffer);
                        buffer.clear();
                        return rest.map(|event| (Ok(event), (bytes, buffer, true)));
                    }
                }
            }
        },
    )
}

/// Where the first event of `buffer` ends: (its length, the separator's length).
fn find_event_end(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| (at, 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| (at, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn parse_event(raw: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(raw);
    let mut name = None;
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("data:") {
            data.push(value.strip_prefix(' ').unwrap_or(value));
        } else if let Some(value) = line.strip_prefix("event:") {
            name = Some(value.trim().to_string());
        }
    }
    (!data.is_empty()).then(|| Event {
        name,
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_framed_by_blank_lines() {
        let raw = b"event: a\ndata: {\"x\":1}\n\n: comment\n\ndata: one\ndata: two\r\n\r\n";
        let (first, sep) = find_event_end(raw).unwrap();
        assert_eq!(
            parse_event(&raw[..first]),
            Some(Event {
                name: Some("a".into()),
                data: "{\"x\":1}".into()
            })
        );
        let rest = &raw[first + sep..];
        let (comment, sep) = find_event_end(rest).unwrap();
        assert_eq!(parse_event(&rest[..comment]), None);
        let last = &rest[comment + sep..];
        let (end, _) = find_event_end(last).unwrap();
        assert_eq!(parse_event(&last[..end]).unwrap().data, "one\ntwo");
    }
}
