//! The one place where OpenAI-shaped protobuf meets the router's types.

use duovarsity_common::Error;
use duovarsity_proto::ai::*;
use prost_types::value::Kind;
use serde_json::Value;

use crate::answer::Answer;
use crate::providers::{Message, Piece, Prompt};

const ROLES: [&str; 4] = ["system", "user", "assistant", "tool"];

/// A protobuf `Value` as JSON.
fn json_of(value: &prost_types::Value) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => Value::from(*n),
        Some(Kind::StringValue(s)) => Value::from(s.clone()),
        Some(Kind::BoolValue(b)) => Value::from(*b),
        Some(Kind::StructValue(s)) => object_of(s),
        Some(Kind::ListValue(list)) => Value::Array(list.values.iter().map(json_of).collect()),
    }
}

fn object_of(object: &prost_types::Struct) -> Value {
    Value::Object(
        object
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), json_of(v)))
            .collect(),
    )
}

/// The prompt of a request, checked; `task_max_tokens` caps the answer when the request
/// does not. Its messages may be empty when the task names a lesson (the router then
/// builds them).
pub fn prompt_of(request: &ChatCompletionRequest, task_max_tokens: u32) -> Result<Prompt, Error> {
    if let Some(bad) = request
        .messages
        .iter()
        .find(|m| !ROLES.contains(&m.role.as_str()))
    {
        return Err(Error::invalid(
            "messages.role",
            format!("{:?} is not one of {ROLES:?}", bad.role),
        ));
    }
    if request.n.is_some_and(|n| n != 1) {
        return Err(Error::invalid("n", "only 1 is supported"));
    }
    if request
        .temperature
        .is_some_and(|t| !(0.0..=2.0).contains(&t))
    {
        return Err(Error::invalid("temperature", "must be between 0 and 2"));
    }
    if request.top_p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
        return Err(Error::invalid("top_p", "must be between 0 and 1"));
    }
    let max_tokens = match request.max_tokens {
        Some(n) if n <= 0 => return Err(Error::invalid("max_tokens", "must be positive")),
        Some(n) => n as u32,
        None => task_max_tokens,
    };
    let stop = match request.stop.as_ref().map(json_of) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(one)) => vec![one],
        Some(Value::Array(list)) if list.len() <= 4 && list.iter().all(Value::is_string) => list
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            return Err(Error::invalid(
                "stop",
                "must be a string or up to 4 strings",
            ));
        }
    };
    Ok(Prompt {
        messages: request
            .messages
            .iter()
            .map(|m| Message {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect(),
        temperature: request.temperature,
        top_p: request.top_p,
        max_tokens,
        stop,
        seed: request.seed,
        tools: request.tools.iter().map(object_of).collect(),
        response_format: request.response_format.as_ref().map(object_of),
        presence_penalty: request.presence_penalty,
        frequency_penalty: request.frequency_penalty,
        stream: request.stream,
    })
}

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

pub fn completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::now_v7().simple())
}

fn usage(prompt: u32, completion: u32) -> CompletionUsage {
    let narrow = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    CompletionUsage {
        prompt_tokens: narrow(prompt),
        completion_tokens: narrow(completion),
        total_tokens: narrow(prompt.saturating_add(completion)),
    }
}

pub fn completion(answer: &Answer) -> ChatCompletion {
    ChatCompletion {
        id: completion_id(),
        object: "chat.completion".into(),
        created: unix_now(),
        model: answer.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: Some(ChatMessage {
                role: "assistant".into(),
                content: answer.text.clone(),
                name: None,
            }),
            finish_reason: answer.finish_reason.clone(),
        }],
        usage: Some(usage(answer.prompt_tokens, answer.completion_tokens)),
        cached: answer.cached,
    }
}

/// A streamed piece as an OpenAI chunk; `first` carries the assistant role.
pub fn chunk(id: &str, model: &str, piece: Piece, first: bool) -> ChatCompletionChunk {
    let role = if first { "assistant" } else { "" }.to_string();
    let (delta, finish_reason, usage) = match piece {
        Piece::Text(content) => (Delta { role, content }, None, None),
        Piece::End {
            finish_reason,
            usage: tokens,
        } => (
            Delta {
                role,
                content: String::new(),
            },
            Some(finish_reason),
            tokens.map(|t| self::usage(t.prompt, t.completion)),
        ),
    };
    ChatCompletionChunk {
        id: id.to_string(),
        object: "chat.completion.chunk".into(),
        created: unix_now(),
        model: model.to_string(),
        choices: vec![ChunkChoice {
            index: 0,
            delta: Some(delta),
            finish_reason,
        }],
        usage,
    }
}
