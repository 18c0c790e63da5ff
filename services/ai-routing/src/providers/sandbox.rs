//! The built-in sandbox model: offline, deterministic and labelled as what it is, so that
//! `duovarsity up` answers with no provider configured. It streams its answer a few words
//! at a time with simulated token counts (about a token per word), honouring max_tokens.

use futures::StreamExt;

use super::{CallError, ModelApi, Piece, Pieces, Prompt, Tokens};

pub struct Sandbox;

/// The sandbox's answer to `prompt`: the same prompt always gets the same words.
pub fn answer(upstream_model: &str, prompt: &Prompt) -> String {
    let question = prompt
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(|m| m.content.as_str())
        .unwrap_or("");
    let digest = ring::digest::digest(&ring::digest::SHA256, question.as_bytes());
    let pick = |options: &[&'static str], byte: usize| {
        options[digest.as_ref()[byte] as usize % options.len()]
    };
    let opener = pick(
        &[
            "Start from what you already know",
            "Look closely at the example",
            "Break the problem into smaller steps",
        ],
        0,
    );
    let closer = pick(
        &[
            "then try again.",
            "then test one small case by hand.",
            "and check each step against the lesson.",
        ],
        1,
    );
    let topic: String = question
        .split_whitespace()
        .take(12)
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "[sandbox model {upstream_model}: an offline stand-in, not a real model] About \"{topic}\": {opener}, {closer}"
    )
}

fn count_tokens(text: &str) -> u32 {
    u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX)
}

#[async_trait::async_trait]
impl ModelApi for Sandbox {
    async fn open(&self, upstream_model: &str, prompt: &Prompt) -> Result<Pieces, CallError> {
        let words: Vec<String> = answer(upstream_model, prompt)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let limit = prompt.max_tokens as usize;
        let finish = if words.len() > limit {
            "length"
        } else {
            "stop"
        };
        let words: Vec<String> = words.into_iter().take(limit).collect();
        let prompt_tokens: u32 = prompt
            .messages
            .iter()
            .map(|m| count_tokens(&m.content) + 4)
            .sum();
        let usage = Tokens {
            prompt: prompt_tokens,
            completion: u32::try_from(words.len()).unwrap_or(u32::MAX),
        };
        let mut pieces: Vec<Result<Piece, CallError>> = words
            .chunks(4)
            .enumerate()
            .map(|(i, chunk)| {
                let lead = if i == 0 { "" } else { " " };
                Ok(Piece::Text(format!("{lead}{}", chunk.join(" "))))
            })
            .collect();
        pieces.push(Ok(Piece::End {
            finish_reason: finish.to_string(),
            usage: Some(usage),
        }));
        Ok(futures::stream::iter(pieces).boxed())
    }
}
