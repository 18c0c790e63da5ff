//! Which answers are shared through the cache, under which key.
//!
//! The key hashes everything that reaches the model (the resolved model, every message and
//! every parameter that changes the output) and whose answer it is:
//! - [`Scope::Shared`]: an answer every learner of a lesson may get. Only prompts built on
//!   the server from the task and the lesson ([`crate::context::shared_prompt`]) are
//!   shared, so no learner's words can reach another learner through the cache.
//! - [`Scope::Private`]: an answer to a learner's own messages, kept for that learner only
//!   (the user id is in the key).
//!
//! A parameter added to [`Prompt`] must be added here (the test below lists them).

use serde_json::json;

use crate::providers::Prompt;

/// Whose answer a cache entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    Shared,
    Private { user: &'a str },
}

/// The cache key of an answer of `model` to `prompt`, for `scope`.
pub fn key(model: &str, prompt: &Prompt, scope: Scope<'_>) -> String {
    let Prompt {
        messages,
        temperature,
        top_p,
        max_tokens,
        stop,
        seed,
        tools,
        response_format,
        presence_penalty,
        frequency_penalty,
        // A streamed and a whole answer are the same answer.
        stream: _,
    } = prompt;
    let parameters = json!({
        "model": model,
        "temperature": temperature,
        "top_p": top_p,
        "max_tokens": max_tokens,
        "stop": stop,
        "seed": seed,
        "tools": tools,
        "response_format": response_format,
        "presence_penalty": presence_penalty,
        "frequency_penalty": frequency_penalty,
    });
    let owner = match scope {
        Scope::Shared => json!("shared"),
        Scope::Private { user } => json!({ "user": user }),
    };
    let canonical = json!({
        "owner": owner,
        "parameters": parameters,
        "messages": messages.iter().map(|m| [&m.role, &m.content]).collect::<Vec<_>>(),
    })
    .to_string();
    duovarsity_common::digest::sha256_hex(canonical.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Message;

    fn prompt() -> Prompt {
        Prompt {
            messages: vec![Message {
                role: "user".into(),
                content: "why does my loop never end?".into(),
            }],
            temperature: Some(0.0),
            max_tokens: 100,
            ..Prompt::default()
        }
    }

    #[test]
    fn every_output_affecting_parameter_changes_the_key() {
        let base = key("m", &prompt(), Scope::Shared);
        let variants: [fn(&mut Prompt); 11] = [
            |p| p.messages[0].content.push('!'),
            |p| p.messages[0].role = "system".into(),
            |p| p.temperature = Some(0.5),
            |p| p.top_p = Some(0.5),
            |p| p.max_tokens = 101,
            |p| p.stop = vec!["\n".into()],
            |p| p.seed = Some(7),
            |p| p.tools = vec![json!({"type": "function"})],
            |p| p.response_format = Some(json!({"type": "json_object"})),
            |p| p.presence_penalty = Some(0.1),
            |p| p.frequency_penalty = Some(0.1),
        ];
        for (n, change) in variants.iter().enumerate() {
            let mut changed = prompt();
            change(&mut changed);
            assert_ne!(key("m", &changed, Scope::Shared), base, "variant {n}");
        }
        assert_ne!(key("other", &prompt(), Scope::Shared), base, "the model");
        assert_eq!(key("m", &prompt(), Scope::Shared), base, "stable");
    }

    #[test]
    fn a_private_answer_is_keyed_by_its_owner() {
        let shared = key("m", &prompt(), Scope::Shared);
        let ada = key("m", &prompt(), Scope::Private { user: "ada" });
        let bob = key("m", &prompt(), Scope::Private { user: "bob" });
        assert_ne!(ada, bob);
        assert_ne!(ada, shared);
        assert_eq!(ada, key("m", &prompt(), Scope::Private { user: "ada" }));
    }
}
