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

use std::time::Instant;

use crate::Router;
use crate::answer::Answer;
use crate::budget::Reservation;
use crate::catalog::ModelSpec;
use crate::providers::Tokens;

/// What the settlement of a request needs to know of it.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub user: String,
    pub task: String,
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
