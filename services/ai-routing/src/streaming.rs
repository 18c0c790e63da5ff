//! Streamed answers: a cacheable request is answered whole through the cache and then
//! streamed in pieces; any other streams from the provider as it answers, and whatever
//! ends the stream (its end, an error after the first token, the client going away)
//! settles what was streamed.

use std::time::Instant;

use duovarsity_common::Error;
use duovarsity_proto::ai::ChatCompletionRequest;
use futures::StreamExt;

use crate::Router;
use crate::answer::{Answer, Caller, Opened, interrupted};
use crate::catalog::ModelSpec;
use crate::providers::{CallError, Piece, Pieces, Tokens};
use crate::routing::{Prepared, too_slow};
use crate::settlement::Pending;

impl Router {
    /// The answer as a stream. Cacheable requests are answered whole through the cache
    /// and then streamed; the others stream from the provider as it answers.
    pub async fn stream(
        &self,
        caller: &Caller,
        request: &ChatCompletionRequest,
    ) -> Result<Opened, Error> {
        let throttled = self.throttled(caller).await?;
        let prepared = self.prepare(caller, request, throttled).await?;
        if prepared.key.is_some() {
            let answer = self.answer(&prepared).await?;
            let words: Vec<Result<Piece, Error>> = split(&answer.text)
                .into_iter()
                .map(|text| Ok(Piece::Text(text)))
                .chain([Ok(Piece::End {
                    finish_reason: answer.finish_reason.clone(),
                    usage: Some(Tokens {
                        prompt: answer.prompt_tokens,
                        completion: answer.completion_tokens,
                    }),
                })])
                .collect();
            return Ok(Opened {
                model: answer.model,
                cached: answer.cached,
                pieces: futures::stream::iter(words).boxed(),
            });
        }
        let reservation = self.reserve(&prepared).await?;
        // Dropped with the stream (a client gone half-way), it settles what was streamed.
        let mut pending = Pending::new(self, &prepared.account, reservation);
        let provider_started = Instant::now();
        let attempted =
            tokio::time::timeout_at(prepared.deadline.into(), self.attempt(&prepared)).await;
        let (model, first, rest) = match attempted {
            Ok(Ok(opened)) => opened,
            Ok(Err(error)) => {
                if let Some(reservation) = pending.take() {
                    self.release(&reservation).await;
                }
                return Err(error);
            }
            Err(_) => {
                if let Some(reservation) = pending.take() {
                    self.release(&reservation).await;
                }
                return Err(too_slow(&prepared, "no model answered"));
            }
        };
        pending.answering(&model);
        let name = model.name.clone();
        let deadline = tokio::time::Instant::from_std(prepared.deadline);
        let tail = Tail {
            router: self.clone(),
            provider_started,
            prepared,
            pending,
            model,
            first: Some(first),
            rest,
        };
        let pieces = futures::stream::unfold(Some(tail), move |state| async move {
            let mut tail = state?;
            let next = match tail.first.take() {
                Some(first) => Some(Ok(first)),
                None => match tokio::time::timeout_at(deadline, tail.rest.next()).await {
                    Ok(next) => next,
                    Err(_) => Some(Err(CallError::Timeout("the answer took too long".into()))),
                },
            };
            match next {
                Some(Ok(Piece::Text(text))) => {
                    tail.pending.text.push_str(&text);
                    Some((Ok(Piece::Text(text)), Some(tail)))
                }
                Some(Ok(Piece::End {
                    finish_reason,
                    usage,
                })) => {
                    tail.ended(&finish_reason, usage).await;
                    Some((
                        Ok(Piece::End {
                            finish_reason,
                            usage,
                        }),
                        None,
                    ))
                }
                Some(Err(error)) => Some((Err(tail.failed(error).await), None)),
                None => Some((
                    Err(tail
                        .failed(CallError::Unavailable("the answer ended early".into()))
                        .await),
                    None,
                )),
            }
        });
        Ok(Opened {
            model: name,
            cached: false,
            pieces: pieces.boxed(),
        })
    }
}

/// The rest of a streamed provider answer, with what must happen when it ends. Dropped
/// before its end (the client went away), its [`Pending`] settles what was streamed.
struct Tail {
    router: Router,
    /// When the provider was first asked (its time is not the router's).
    provider_started: Instant,
    prepared: Prepared,
    pending: Pending,
    model: ModelSpec,
    first: Option<Piece>,
    rest: Pieces,
}

impl Tail {
    async fn ended(&mut self, finish_reason: &str, usage: Option<Tokens>) {
        let router = &self.router;
        router.breakers.record(
            &self.model.provider,
            true,
            &self.prepared.live.catalog.breaker,
        );
        let Some(reservation) = self.pending.take() else {
            return;
        };
        let tokens = self.prepared.account.tokens(usage, &self.pending.text);
        let answer = Answer {
            model: self.model.name.clone(),
            provider: self.model.provider.clone(),
            text: std::mem::take(&mut self.pending.text),
            finish_reason: finish_reason.to_string(),
            prompt_tokens: tokens.prompt,
            completion_tokens: tokens.completion,
            cached: false,
        };
        router
            .finish(
                &self.prepared.account,
                Some(&reservation),
                &answer,
                Some(&self.model),
                self.provider_started.elapsed(),
            )
            .await;
    }

    /// After the first token: the answer ends with an error; what was produced is paid.
    async fn failed(&mut self, error: CallError) -> Error {
        let router = &self.router;
        router.breakers.record(
            &self.model.provider,
            false,
            &self.prepared.live.catalog.breaker,
        );
        if let Some(reservation) = self.pending.take() {
            let tokens = self.prepared.account.tokens(None, &self.pending.text);
            let cost = self.model.cost(tokens.prompt, tokens.completion);
            if let Err(settle) = router.budgets.settle(&reservation, cost).await {
                tracing::error!(error = %settle, "settling an interrupted AI answer failed");
            }
        }
        metrics::counter!("ai_requests_total", "model" => self.model.name.clone(), "provider" => self.model.provider.clone(), "outcome" => "interrupted").increment(1);
        interrupted(&self.model.name, error)
    }
}

/// A cached answer in a few pieces, as a stream would bring it.
fn split(text: &str) -> Vec<String> {
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    words.chunks(8).map(|chunk| chunk.concat()).collect()
}
