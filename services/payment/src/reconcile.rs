//! The reconciliation job: a missed webhook never leaves a paid learner without access,
//! and abandoned orders do not stay open forever.
//!
//! Every round it
//! - deletes orders whose provider order was never made (the process died between the
//!   two steps of a checkout) once they are a minute old;
//! - asks the provider about open orders unchanged for
//!   `DUOVARSITY_PAYMENT_RECONCILE_AFTER_SECS` and applies what it learns (event ids
//!   `settlement:…`, so a webhook that arrives after changes nothing);
//! - expires orders still unpaid after `DUOVARSITY_PAYMENT_ORDER_TTL_SECS`;
//! - publishes gauges: orders by state, and the ledger's imbalance (always 0).
//!
//! Replicas may run it at once: every change is a compare-and-set with a remembered
//! event id, so two rounds racing apply each fact once.

use std::time::Duration;

use duovarsity_common::Error;
use duovarsity_common::time::now_millis;
use tokio_util::sync::CancellationToken;

use crate::Payments;
use crate::orders::{self, Applied, EventKind, ProviderEvent};
use crate::store;

/// Orders asked about per round.
const BATCH: u32 = 100;
/// How old an order without a provider order must be before it is deleted.
const UNSTARTED_GRACE_MS: i64 = 60_000;

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub checked: usize,
    /// Orders the provider's answer moved (missed webhooks).
    pub fixed: usize,
    pub expired: usize,
}

impl Payments {
    /// How often the job runs: a quarter of the reconcile threshold, between 250 ms and
    /// 30 s.
    fn reconcile_every(&self) -> Duration {
        (self.rules.reconcile_after / 4).clamp(Duration::from_millis(250), Duration::from_secs(30))
    }

    pub async fn run_reconciliation(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.reconcile_every());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.reconcile_once().await {
                tracing::warn!(%error, "payment reconciliation round failed");
            }
        }
    }

    pub async fn reconcile_once(&self) -> Result<Round, Error> {
        let now = now_millis();
        store::orders::delete_unstarted(&self.db, None, now - UNSTARTED_GRACE_MS).await?;
        let threshold = i64::try_from(self.rules.reconcile_after.as_millis()).unwrap_or(i64::MAX);
        let ttl = i64::try_from(self.rules.order_ttl.as_millis()).unwrap_or(i64::MAX);
        let mut round = Round::default();
        for order in store::orders::unsettled(&self.db, now - threshold, BATCH).await? {
            round.checked += 1;
            match self.settle(&order).await {
                Ok(Applied::Moved(state)) => {
                    round.fixed += 1;
                    metrics::counter!("payment_reconciliation_fixes_total", "state" => state.as_str())
                        .increment(1);
                    tracing::info!(order = %order.id, state = state.as_str(), "reconciliation applied a missed provider event");
                    continue;
                }
                Ok(_) => {}
                // The provider is down: try again next round; never expire blind.
                Err(error) => {
                    tracing::warn!(order = %order.id, %error, "reconciliation could not ask the provider");
                    continue;
                }
            }
            if order.created_at < now - ttl {
                let expire = ProviderEvent {
                    provider: order.provider.clone(),
                    event_id: format!("expire:{}", order.id),
                    provider_order_id: order.provider_order_id.clone().unwrap_or_default(),
                    kind: EventKind::Expired,
                };
                if let Applied::Moved(_) = orders::apply(&self.db, &self.outbox, &expire).await? {
                    round.expired += 1;
                    metrics::counter!("payment_orders_expired_total").increment(1);
                }
            }
        }
        self.publish_gauges().await?;
        Ok(round)
    }

    async fn publish_gauges(&self) -> Result<(), Error> {
        for state in crate::state::ALL {
            metrics::gauge!("payment_orders", "state" => state.as_str()).set(0.0);
        }
        for (state, count) in store::orders::count_by_state(&self.db).await? {
            metrics::gauge!("payment_orders", "state" => state).set(count as f64);
        }
        let imbalance: i64 = store::ledger::imbalance(&self.db)
            .await?
            .iter()
            .map(|(_, sum)| sum.abs())
            .sum();
        metrics::gauge!("payment_ledger_imbalance_minor").set(imbalance as f64);
        if imbalance != 0 {
            tracing::error!(imbalance, "the payment ledger does not sum to zero");
        }
        Ok(())
    }
}
