//! What the router answers with, and the errors it answers with when it cannot.

use std::time::Duration;

use duovarsity_common::Error;
use duovarsity_common::grpc::Onward;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::budget::{Exhausted, today};
use crate::providers::{CallError, Piece};

/// Who asks, and what the router passes on when it reads the task's lesson for them.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: String,
    pub tier: String,
    pub onward: Onward,
}

/// A whole answer (what the cache stores).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub model: String,
    pub provider: String,
    pub text: String,
    pub finish_reason: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    #[serde(skip)]
    pub cached: bool,
}

/// A streamed answer: the model that answers and its pieces.
pub struct Opened {
    pub model: String,
    pub cached: bool,
    pub pieces: BoxStream<'static, Result<Piece, Error>>,
}

/// The caller's or the platform's budget for the day is spent.
pub fn exhausted(scope: Exhausted) -> Error {
    let (_, resets) = today();
    let resets_at = humantime_utc(resets);
    let (label, message) = match scope {
        Exhausted::User => (
            "user",
            format!("your AI budget for today is spent; it resets at {resets_at}"),
        ),
        Exhausted::Platform => (
            "platform",
            format!("the platform's AI budget for today is spent; it resets at {resets_at}"),
        ),
    };
    metrics::counter!("ai_budget_refusals_total", "scope" => label).increment(1);
    let wait = resets
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    Error::ResourceExhausted {
        reason: "BUDGET_EXCEEDED",
        message,
        retry_after: Some(wait.max(Duration::from_secs(1))),
    }
}

/// RFC 3339 of a UTC instant, to the second.
pub fn humantime_utc(at: std::time::SystemTime) -> String {
    let secs = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let timestamp = prost_types::Timestamp {
        seconds: secs as i64,
        nanos: 0,
    };
    timestamp.to_string()
}

/// An answer that failed after its first token.
pub fn interrupted(model: &str, error: CallError) -> Error {
    Error::Unavailable {
        message: format!("{model} failed while answering: {error}"),
        retry_after: Some(Duration::from_secs(1)),
    }
}

pub fn no_answer(last: Option<CallError>) -> Error {
    tracing::warn!(error = ?last, "no model of the plan could answer");
    Error::Unavailable {
        message: "no model could answer right now; retry shortly".into(),
        retry_after: Some(Duration::from_secs(2)),
    }
}
