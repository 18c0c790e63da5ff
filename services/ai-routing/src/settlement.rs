//! Every reservation is settled, however its request ends.
//!
//! A request reserves its worst case on the budgets before any provider is called. Most
//! requests settle it themselves (the answer's cost, or nothing on failure). One that is
//! dropped part-way (the client went away, the gateway's deadline passed, a stream was
//! abandoned) would otherwise leave its worst case charged all day with no usage row:
//! [`Pending`] holds the reservation while the request runs and, when dropped unsettled,
//! settles it to what was generated so far (the prompt and the text streamed, at the
//! answering model's prices), records the usage row and its `ai.usage` event, and counts
//! `ai_requests_total{outcome="cancelled"}`.

use std::time::{Duration, Instant};

use crate::Router;
use crate::answer::Answer;
use crate::budget::Reservation;
use crate::catalog::ModelSpec;
use crate::providers::Tokens;
use crate::usage::{self, UsageRow};

/// What the settlement of a request needs to know of it.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub user: String,
    pub task: String,
    /// The lesson the task named (empty when none).
    pub course_id: String,
    pub lesson_id: String,
    pub started: Instant,
    /// The prompt's estimated tokens (charged when the provider never said).
    pub prompt_estimate: u32,
}

impl Account {
    /// Tokens of an answer of `text`: the provider's counts, or an estimate.
    pub fn tokens(&self, usage: Option<Tokens>, text: &str) -> Tokens {
        usage.unwrap_or(Tokens {
            prompt: self.prompt_estimate,
            completion: u32::try_from(text.len() / 4 + 1).unwrap_or(u32::MAX),
        })
    }
}

/// A reservation while its request runs, and what the request produced so far.
pub(crate) struct Pending {
    router: Router,
    account: Account,
    reservation: Option<Reservation>,
    /// The model answering, once one gave its first token.
    model: Option<ModelSpec>,
    /// The text generated so far.
    pub text: String,
}

impl Pending {
    pub fn new(router: &Router, account: &Account, reservation: Reservation) -> Self {
        Self {
            router: router.clone(),
            account: account.clone(),
            reservation: Some(reservation),
            model: None,
            text: String::new(),
        }
    }

    /// `model` gave its first token: a cancellation from now on pays for its output.
    pub fn answering(&mut self, model: &ModelSpec) {
        self.model = Some(model.clone());
    }

    /// The reservation, for the request to settle itself (None once taken).
    pub fn take(&mut self) -> Option<Reservation> {
        self.reservation.take()
    }

    /// Hands a taken reservation back, to be settled as a cancellation on drop.
    pub fn restore(&mut self, reservation: Option<Reservation>) {
        self.reservation = reservation;
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(reservation) = self.reservation.take() else {
            return;
        };
        let router = self.router.clone();
        let account = self.account.clone();
        let model = self.model.take();
        let text = std::mem::take(&mut self.text);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!(user = %account.user, "an AI request ended outside the runtime; its reservation stays");
            return;
        };
        runtime.spawn(async move {
            router
                .settle_cancelled(&account, reservation, model, text)
                .await;
        });
    }
}

impl Router {
    /// Settles a request that was dropped: to the cost of what `model` generated (nothing
    /// if no model had answered yet), with a usage row and event for the former.
    async fn settle_cancelled(
        &self,
        account: &Account,
        reservation: Reservation,
        model: Option<ModelSpec>,
        text: String,
    ) {
        let Some(model) = model else {
            metrics::counter!("ai_requests_total", "model" => "", "provider" => "", "outcome" => "cancelled").increment(1);
            self.release(&reservation).await;
            return;
        };
        metrics::counter!("ai_requests_total", "model" => model.name.clone(), "provider" => model.provider.clone(), "outcome" => "cancelled").increment(1);
        let tokens = account.tokens(None, &text);
        tracing::info!(user = %account.user, model = %model.name, completion_tokens = tokens.completion, "an AI answer was cancelled; settled to what was generated");
        let answer = Answer {
            model: model.name.clone(),
            provider: model.provider.clone(),
            text,
            finish_reason: "cancelled".into(),
            prompt_tokens: tokens.prompt,
            completion_tokens: tokens.completion,
            cached: false,
        };
        self.finish(
            account,
            Some(&reservation),
            &answer,
            Some(&model),
            account.started.elapsed(),
        )
        .await;
    }
}

/// How a request that ends by itself pays: its answer's cost, or nothing.
impl Router {
    /// Records a finished answer: the router's own share of its latency (all of it but
    /// `provider_time`), budget, metrics, usage row and event.
    pub(crate) async fn finish(
        &self,
        account: &Account,
        reservation: Option<&Reservation>,
        answer: &Answer,
        model: Option<&ModelSpec>,
        provider_time: Duration,
    ) {
        let added = account.started.elapsed().saturating_sub(provider_time);
        metrics::histogram!("ai_router_added_seconds").record(added.as_secs_f64());
        let cost = model.map_or(0, |m| {
            m.cost(answer.prompt_tokens, answer.completion_tokens)
        });
        if let Some(reservation) = reservation
            && let Err(error) = self.budgets.settle(reservation, cost).await
        {
            tracing::error!(%error, "settling an AI budget reservation failed; it stays reserved");
        }
        let outcome = match (answer.cached, answer.finish_reason.as_str()) {
            (true, _) => "cache_hit",
            (false, "cancelled") => "cancelled",
            (false, _) => "ok",
        };
        metrics::counter!("ai_requests_total", "model" => answer.model.clone(), "provider" => answer.provider.clone(), "outcome" => outcome).increment(1);
        metrics::counter!("ai_tokens_total", "model" => answer.model.clone(), "kind" => "prompt")
            .increment(u64::from(answer.prompt_tokens));
        metrics::counter!("ai_tokens_total", "model" => answer.model.clone(), "kind" => "completion").increment(u64::from(answer.completion_tokens));
        metrics::counter!("ai_cost_nano_usd_total", "model" => answer.model.clone())
            .increment(cost.max(0) as u64);
        let row = UsageRow {
            id: uuid::Uuid::now_v7().to_string(),
            user_id: account.user.clone(),
            model: answer.model.clone(),
            provider: answer.provider.clone(),
            task: account.task.clone(),
            course_id: account.course_id.clone(),
            lesson_id: account.lesson_id.clone(),
            prompt_tokens: answer.prompt_tokens,
            completion_tokens: answer.completion_tokens,
            cost_nano: cost,
            cached: answer.cached,
            latency_ms: u32::try_from(account.started.elapsed().as_millis()).unwrap_or(u32::MAX),
            created_at: usage::now(),
        };
        self.usage.record(row).await;
    }

    /// Gives a failed request's reservation back whole.
    pub(crate) async fn release(&self, reservation: &Reservation) {
        if let Err(error) = self.budgets.settle(reservation, 0).await {
            tracing::error!(%error, "releasing an AI budget reservation failed");
        }
    }
}
