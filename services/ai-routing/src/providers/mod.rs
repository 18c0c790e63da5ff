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

use eventsource_stream::{EventStreamError, Eventsource as _};
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

/// One server-sent event (its `data` is what providers send).
pub use eventsource_stream::Event;

/// The events of a `text/event-stream` body, framed by `eventsource-stream` (the SSE
/// specification's parser: any line ending, comments, multi-line data), which reads each
/// chunk once as it arrives.
fn events(response: reqwest::Response) -> impl Stream<Item = Result<Event, CallError>> + Send {
    events_of(response.bytes_stream())
}

fn events_of(
    bytes: impl Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send,
) -> impl Stream<Item = Result<Event, CallError>> + Send {
    bytes.eventsource().map(|event| match event {
        Ok(event) => Ok(event),
        Err(EventStreamError::Transport(error)) => Err(unreachable(error)),
        Err(error) => Err(CallError::Unavailable(format!(
            "an unreadable event stream: {error}"
        ))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_framed_however_the_bytes_arrive() {
        let raw: &[u8] =
            b"event: a\ndata: {\"x\":1}\n\n: comment\n\ndata: one\ndata: two\r\n\r\ndata: last\n\n";
        // Split anywhere, even inside a line ending, the same events come out.
        for split in [1, 7, 20, 33, 37, raw.len() - 1] {
            let chunks = vec![
                Ok(bytes::Bytes::copy_from_slice(&raw[..split])),
                Ok(bytes::Bytes::copy_from_slice(&raw[split..])),
            ];
            let events: Vec<Event> = events_of(futures::stream::iter(chunks))
                .map(Result::unwrap)
                .collect()
                .await;
            let data: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
            assert_eq!(data, ["{\"x\":1}", "one\ntwo", "last"], "split at {split}");
            assert_eq!(events[0].event, "a");
        }
    }
}
