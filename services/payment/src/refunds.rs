//! Refunds: who may refund what, and the provider's refund applied like any provider
//! event.
//!
//! - A learner refunds their own order within the refund window after capture
//!   (`DUOVARSITY_PAYMENT_REFUND_WINDOW_DAYS`); an admin refunds any order at any time.
//! - A learner's refund is always of everything left, and so ends their access: a partial
//!   amount is refused (`PARTIAL_REFUND_NOT_ALLOWED`, 422), since half the price back with
//!   the course kept would make every course half price. Partial refunds are an admin's
//!   goodwill gesture and keep access. Never more than is left.
//! - The provider is asked first. Its refund is then applied under the event id
//!   `refund:<provider refund id>` and posted to the ledger under that refund id, so the
//!   provider's `refund.processed` webhook for the same refund changes nothing. If the
//!   service fails after the provider refunded, that webhook (or a retry of this call,
//!   which reuses the provider idempotency key) brings the order up to date.
//! - A full refund publishes `payment.refunded` with `full`, and the course service
//!   revokes the enrollment.

use duovarsity_common::Error;
use duovarsity_common::auth::Claims;
use duovarsity_common::time::now_millis;
use duovarsity_proto::payment::{Order, RefundOrderRequest};

use crate::Payments;
use crate::orders::{self, Applied, EventKind, ProviderEvent};
use crate::providers::provider_error;
use crate::state::OrderState;

impl Payments {
    pub async fn refund(
        &self,
        claims: &Claims,
        request: RefundOrderRequest,
    ) -> Result<Order, Error> {
        let order = self.own_order(claims, &request.order_id).await?;
        if !matches!(
            order.state,
            OrderState::Captured | OrderState::PartiallyRefunded
        ) {
            return Err(Error::FailedPrecondition {
                reason: "ORDER_NOT_REFUNDABLE",
                message: format!(
                    "only a paid order can be refunded; order {} is {}",
                    order.id,
                    order.state.as_str()
                ),
            });
        }
        if !claims.is_admin() {
            let window_ends = order
                .captured_at
                .map_or(0, |at| at.saturating_add(self.refund_window_ms()));
            if now_millis() > window_ends {
                return Err(Error::FailedPrecondition {
                    reason: "REFUND_WINDOW_CLOSED",
                    message: format!(
                        "the refund window of {} days after payment has closed",
                        self.rules.refund_window.as_secs() / 86_400
                    ),
                });
            }
        }
        let left = order.captured_minor - order.refunded_minor;
        let amount = if request.amount_minor == 0 {
            left
        } else {
            request.amount_minor
        };
        if !claims.is_admin() && amount != left {
            return Err(Error::FailedPrecondition {
                reason: "PARTIAL_REFUND_NOT_ALLOWED",
                message: format!(
                    "a learner's refund is the whole {left} left on the order (send amount 0); \
                     partial refunds are made by support"
                ),
            });
        }
        if amount > left {
            return Err(Error::invalid(
                "amount_minor",
                format!("at most {left} is left to refund"),
            ));
        }
        let (Some(payment_id), Some(provider_order_id)) =
            (order.payment_id.clone(), order.provider_order_id.clone())
        else {
            return Err(Error::internal(
                "refund",
                &format!("captured order {} has no payment id", order.id),
            ));
        };
        let provider = self.providers.named(&order.provider)?;
        // The same refund asked again (a retry after a timeout) carries the same key.
        let key = format!("{}-refund-after-{}", order.id, order.refunded_minor);
        let refund = provider
            .refund(&payment_id, amount, &key)
            .await
            .map_err(provider_error)?;
        tracing::info!(order = %order.id, refund = %refund.id, amount, by = %claims.sub, reason = %request.reason, "refunded");
        let event = ProviderEvent {
            provider: order.provider.clone(),
            event_id: format!("refund:{}", refund.id),
            provider_order_id,
            kind: EventKind::Refunded {
                refund_id: refund.id,
                amount: refund.amount,
            },
        };
        match orders::apply(&self.db, &self.outbox, &event).await? {
            Applied::Moved(_) | Applied::Duplicate => {}
            other => {
                tracing::warn!(order = %order.id, ?other, "a provider refund did not move the order")
            }
        }
        self.reread(&order.id).await
    }
}
