//! The router: from a chat request to an answer, correct where proxies usually fail.
//!
//! 1. The plan ([`crate::policy`]) from the catalog in force, the caller's tier, the task
//!    and whether the caller is throttled (past `throttle_at` of the day's budget).
//! 2. Cacheable requests ([`crate::caching`]) go through the two-level cache: concurrent
//!    identical misses make one call, and a hit costs nothing (no budget is touched).
//! 3. Otherwise the worst-case cost over the plan is reserved on the caller's and the
//!    platform's budgets ([`crate::budget`]) before any provider is called.
//! 4. The plan's models are tried in order, at most `max_attempts`: a model whose breaker
//!    is open or that is over its per-minute limits is skipped; an error, a 429 or no
//!    first token within `first_token_timeout` moves to the next one. Once a token has
//!    been received the answer belongs to that model: a later error ends the answer with
//!    an error, never a silent switch.
//! 5. The reservation is settled to the actual cost (released to nothing on failure),
//!    and the usage is recorded with an `ai.usage` event. A request dropped part-way (a
//!    client gone, a stream abandoned) is settled to what it generated
//!    ([`crate::settlement`]).
//!
//! The answer must be complete by the policy's `total_timeout`, or by the caller's own
//! deadline when that is sooner (the gateway sends it): the router then gives up first,
//! settles, and says why, instead of being cut off mid-call by its caller.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use duovarsity_common::Error;
use duovarsity_proto::ai::ChatCompletionRequest;
use futures::StreamExt;

use crate::Router;
use crate::answer::{Answer, Caller, exhausted, interrupted, no_answer};
use crate::budget::Reservation;
use crate::caching::Scope;
use crate::catalog::ModelSpec;
use crate::context::{private_prompt, shared_prompt};
use crate::convert::prompt_of;
use crate::policy::{Plan, plan};
use crate::providers::{CallError, Piece, Pieces, Prompt};
use crate::reload::Live;
use crate::settlement::{Account, Pending};

/// One request, ready to run.
pub(crate) struct Prepared {
    pub(crate) live: Arc<Live>,
    pub(crate) plan: Plan,
    pub(crate) prompt: Prompt,
    pub(crate) key: Option<String>,
    pub(crate) caller: Caller,
    pub(crate) account: Account,
    /// When the answer must be complete: the policy's total timeout, or sooner when the
    /// caller's own deadline (the gateway's) ends first, so that the router answers and
    /// settles before its caller gives up.
    pub(crate) deadline: Instant,
    /// Whether `deadline` is the caller's rather than the policy's.
    pub(crate) callers_deadline: bool,
}

/// How long before the caller's deadline the router stops waiting for a provider.
const DEADLINE_MARGIN: Duration = Duration::from_millis(250);

/// The error of a request whose deadline passed: the caller's (504, as the gateway would
/// say) or the policy's total timeout (503, retryable).
pub(crate) fn too_slow(prepared: &Prepared, what: &str) -> Error {
    if prepared.callers_deadline {
        Error::DeadlineExceeded {
            message: format!("{what} within the request's deadline"),
        }
    } else {
        Error::Unavailable {
            message: format!("{what} within the policy's total timeout"),
            retry_after: Some(Duration::from_secs(1)),
        }
    }
}

impl Router {
    pub(crate) async fn prepare(
        &self,
        caller: &Caller,
        request: &ChatCompletionRequest,
        throttled: bool,
    ) -> Result<Prepared, Error> {
        let live = self.catalog.current();
        let catalog = &live.catalog;
        let task = request.task.clone().filter(|t| !t.kind.is_empty());
        let breakers = &self.breakers;
        let plan = plan(
            catalog,
            &caller.tier,
            &request.model,
            task.as_ref().map(|t| t.kind.as_str()),
            throttled,
            |m| breakers.healthy(&m.provider),
        )?;
        let task_policy = &catalog.tasks[&plan.task];
        let mut prompt = prompt_of(request, task_policy.max_tokens)?;
        let lesson = match task.as_ref().filter(|t| !t.lesson_id.is_empty()) {
            Some(named) => Some((
                named,
                self.lessons.read(&caller.onward, &named.lesson_id).await?,
            )),
            None => None,
        };
        // Shared only when nothing of the caller's reached the prompt; the caller's own
        // words are cached for them alone, and only when the answer is repeatable.
        let own_cacheable = task_policy.cacheable || prompt.temperature == Some(0.0);
        let (course_id, lesson_id) = lesson
            .as_ref()
            .map(|(_, lesson)| (lesson.course_id.clone(), lesson.id.clone()))
            .unwrap_or_default();
        let scope = match lesson {
            Some((task, lesson)) if prompt.messages.is_empty() => {
                prompt.messages = shared_prompt(task, &lesson);
                task_policy.cacheable.then_some(Scope::Shared)
            }
            Some((task, lesson)) => {
                prompt.messages =
                    private_prompt(task, &lesson, std::mem::take(&mut prompt.messages));
                own_cacheable.then_some(Scope::Private { user: &caller.user })
            }
            None if prompt.messages.is_empty() => {
                return Err(Error::invalid(
                    "messages",
                    "must hold at least one message unless the task names a lesson_id",
                ));
            }
            None => own_cacheable.then_some(Scope::Private { user: &caller.user }),
        };
        let key = scope.map(|scope| crate::caching::key(&plan.models[0].name, &prompt, scope));
        let started = Instant::now();
        let policy_deadline = started + catalog.total_timeout;
        let callers = caller
            .onward
            .deadline()
            .map(|at| at.checked_sub(DEADLINE_MARGIN).unwrap_or(at));
        let deadline = callers.map_or(policy_deadline, |at| at.min(policy_deadline));
        let callers_deadline = callers.is_some_and(|at| at < policy_deadline);
        let account = Account {
            user: caller.user.clone(),
            task: plan.task.clone(),
            course_id,
            lesson_id,
            started,
            prompt_estimate: prompt.estimated_tokens(),
        };
        Ok(Prepared {
            live: live.clone(),
            plan,
            prompt,
            key,
            caller: caller.clone(),
            account,
            deadline,
            callers_deadline,
        })
    }

    /// Whether the caller is past the throttle share of the day's budget.
    pub(crate) async fn throttled(&self, caller: &Caller) -> Result<bool, Error> {
        let live = self.catalog.current();
        let limit = live
            .catalog
            .daily_budget
            .get(&caller.tier)
            .copied()
            .unwrap_or(0);
        let spent = self.budgets.spent(&caller.user).await?;
        Ok(spent as f64 >= live.catalog.throttle_at * limit as f64)
    }

    fn max_tokens(prompt: &Prompt, model: &ModelSpec) -> u32 {
        prompt.max_tokens.min(model.max_output_tokens)
    }

    pub(crate) async fn reserve(&self, prepared: &Prepared) -> Result<Reservation, Error> {
        let catalog = &prepared.live.catalog;
        let estimate = prepared.prompt.estimated_tokens();
        let worst = prepared
            .plan
            .models
            .iter()
            .map(|m| m.cost(estimate, Self::max_tokens(&prepared.prompt, m)))
            .max()
            .unwrap_or(0);
        let user_limit = catalog
            .daily_budget
            .get(&prepared.caller.tier)
            .copied()
            .unwrap_or(0);
        self.budgets
            .reserve(
                &prepared.caller.user,
                worst,
                user_limit,
                catalog.platform_daily_budget,
            )
            .await?
            .map_err(exhausted)
    }

    /// Tries the plan's models until one gives a first piece: that model and its stream.
    pub(crate) async fn attempt(
        &self,
        prepared: &Prepared,
    ) -> Result<(ModelSpec, Piece, Pieces), Error> {
        let catalog = &prepared.live.catalog;
        let mut last = None;
        for model in &prepared.plan.models {
            let Some(client) = prepared.live.clients.get(&model.provider) else {
                continue;
            };
            let mut prompt = prepared.prompt.clone();
            prompt.max_tokens = Self::max_tokens(&prompt, model);
            let worst = prompt.estimated_tokens().saturating_add(prompt.max_tokens);
            if !self
                .limits
                .take(
                    &model.name,
                    model.requests_per_minute,
                    model.tokens_per_minute,
                    worst,
                )
                .await
            {
                metrics::counter!("ai_requests_total", "model" => model.name.clone(), "provider" => model.provider.clone(), "outcome" => "rate_limited_locally").increment(1);
                continue;
            }
            if !self.breakers.admit(&model.provider) {
                continue;
            }
            // An answer asked for whole has no first token before its end.
            let first_piece_within = if prompt.stream {
                catalog.first_token_timeout
            } else {
                catalog.total_timeout
            };
            let opened = tokio::time::timeout(first_piece_within, async {
                let mut pieces = client.open(&model.upstream_model, &prompt).await?;
                match pieces.next().await {
                    Some(Ok(first)) => Ok((first, pieces)),
                    Some(Err(error)) => Err(error),
                    None => Err(CallError::Unavailable("an empty answer".into())),
                }
            })
            .await
            .unwrap_or_else(|_| Err(CallError::Timeout("no first token in time".into())));
            match opened {
                Ok((first, rest)) => return Ok((model.clone(), first, rest)),
                Err(CallError::Rejected(detail)) => {
                    self.breakers
                        .record(&model.provider, true, &catalog.breaker);
                    return Err(Error::FailedPrecondition {
                        reason: "PROVIDER_REJECTED",
                        message: format!("{} refused the request: {detail}", model.name),
                    });
                }
                Err(error) => {
                    let outcome = match error {
                        CallError::RateLimited(_) => "rate_limited",
                        CallError::Timeout(_) => "timeout",
                        _ => "error",
                    };
                    metrics::counter!("ai_requests_total", "model" => model.name.clone(), "provider" => model.provider.clone(), "outcome" => outcome).increment(1);
                    tracing::warn!(model = %model.name, %error, "falling back");
                    self.breakers
                        .record(&model.provider, false, &catalog.breaker);
                    last = Some(error);
                }
            }
        }
        Err(no_answer(last))
    }

    /// Calls the plan and collects the whole answer (within the request's deadline).
    async fn call(&self, prepared: &Prepared) -> Result<Answer, Error> {
        let reservation = self.reserve(prepared).await?;
        // Dropped with the request (a client gone, a deadline passed), it settles itself.
        let mut pending = Pending::new(self, &prepared.account, reservation);
        let provider_started = Instant::now();
        let called = tokio::time::timeout_at(prepared.deadline.into(), async {
            let (model, first, mut rest) = self.attempt(prepared).await.map_err(|e| (None, e))?;
            pending.answering(&model);
            let mut piece = Some(Ok(first));
            while let Some(next) = piece {
                match next {
                    Ok(Piece::Text(more)) => pending.text.push_str(&more),
                    Ok(Piece::End {
                        finish_reason,
                        usage,
                    }) => {
                        let tokens = prepared.account.tokens(usage, &pending.text);
                        return Ok((model, finish_reason, tokens));
                    }
                    Err(error) => {
                        let error = interrupted(&model.name, error);
                        return Err((Some(model), error));
                    }
                }
                piece = rest.next().await;
            }
            let error = CallError::Unavailable("the answer ended early".into());
            Err((Some(model.clone()), interrupted(&model.name, error)))
        })
        .await;
        let breaker = &prepared.live.catalog.breaker;
        let (called, reservation) = match (called, pending.take()) {
            (Ok(called), Some(reservation)) => (called, reservation),
            (Ok(_), None) => {
                return Err(Error::internal(
                    "AI call",
                    &"a reservation was settled twice",
                ));
            }
            // Out of time: what the model generated so far is paid when `pending` drops.
            (Err(_), reservation) => {
                pending.restore(reservation);
                return Err(too_slow(prepared, "the answer was not complete"));
            }
        };
        match called {
            Ok((model, finish_reason, tokens)) => {
                self.breakers.record(&model.provider, true, breaker);
                let answer = Answer {
                    model: model.name.clone(),
                    provider: model.provider.clone(),
                    text: std::mem::take(&mut pending.text),
                    finish_reason,
                    prompt_tokens: tokens.prompt,
                    completion_tokens: tokens.completion,
                    cached: false,
                };
                let provider_time = provider_started.elapsed();
                self.finish(
                    &prepared.account,
                    Some(&reservation),
                    &answer,
                    Some(&model),
                    provider_time,
                )
                .await;
                Ok(answer)
            }
            Err((model, error)) => {
                if let Some(model) = model {
                    self.breakers.record(&model.provider, false, breaker);
                }
                self.release(&reservation).await;
                Err(error)
            }
        }
    }

    /// The answer through the cache when the request is cacheable.
    pub(crate) async fn answer(&self, prepared: &Prepared) -> Result<Answer, Error> {
        let Some(key) = &prepared.key else {
            return self.call(prepared).await;
        };
        let ran = AtomicBool::new(false);
        let bytes = self
            .cache
            .get_or_load(key, || async {
                ran.store(true, Ordering::SeqCst);
                let answer = self.call(prepared).await?;
                serde_json::to_vec(&answer)
                    .map(Bytes::from)
                    .map_err(|error| Error::internal("encoding an AI answer", &error))
            })
            .await?;
        let hit = !ran.load(Ordering::SeqCst);
        metrics::counter!("ai_cache_requests_total", "result" => if hit { "hit" } else { "miss" })
            .increment(1);
        let mut answer: Answer = serde_json::from_slice(&bytes)
            .map_err(|error| Error::internal("decoding a cached AI answer", &error))?;
        if hit {
            answer.cached = true;
            self.finish(&prepared.account, None, &answer, None, Duration::ZERO)
                .await;
        }
        Ok(answer)
    }

    pub async fn complete(
        &self,
        caller: &Caller,
        request: &ChatCompletionRequest,
    ) -> Result<Answer, Error> {
        let throttled = self.throttled(caller).await?;
        let prepared = self.prepare(caller, request, throttled).await?;
        self.answer(&prepared).await
    }
}
