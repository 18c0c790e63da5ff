//! Applying what a provider says (a webhook, or the reconciliation job's answer) to an
//! order, exactly once in effect:
//! - the event id is remembered in the same transaction, so a redelivered webhook changes
//!   nothing ([`Applied::Duplicate`]);
//! - the order moves only forward ([`crate::state`]); an event behind it is
//!   [`Applied::Stale`], acknowledged and ignored;
//! - a capture and each refund post their ledger transaction in the same database
//!   transaction, once per order (capture) or per provider refund;
//! - the move is a compare-and-set on the stored state, so two events for one order
//!   racing on two replicas apply one after the other.

use duovarsity_common::Error;
use duovarsity_common::db::Database;
use duovarsity_common::events::outbox::Outbox;
use duovarsity_common::events::{PendingEvent, pending_event};
use duovarsity_proto::events::{PaymentCaptured, PaymentRefunded};

use crate::ledger::Sale;
use crate::state::{Event, OrderState, Step};
use crate::store;
use crate::store::ledger::Entry;
use crate::store::orders::OrderRow;

/// What a provider reported about one of its orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderEvent {
    pub provider: String,
    /// The provider's event id (webhook deliveries of one event share it).
    pub event_id: String,
    pub provider_order_id: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    AttemptFailed,
    Authorized {
        payment_id: String,
    },
    /// `amount` captured, of which the provider kept `fee`.
    Captured {
        payment_id: String,
        amount: i64,
        fee: i64,
    },
    Refunded {
        refund_id: String,
        amount: i64,
    },
    Expired,
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    Moved(OrderState),
    /// This event id was applied before.
    Duplicate,
    /// Behind the order (which is in this state): nothing changed.
    Stale(OrderState),
    /// The event cannot happen from the order's state (a refund of an unpaid order).
    Refused(OrderState),
    /// No order of ours has this provider order id.
    UnknownOrder,
}

/// Compare-and-set attempts before giving up on an order that keeps changing.
const ATTEMPTS: usize = 5;

/// Applies `event`; a capture or a refund that moved the order also enqueues
/// `payment.captured` or `payment.refunded` in `outbox`, in the same transaction.
pub async fn apply(
    db: &Database,
    outbox: &Outbox,
    event: &ProviderEvent,
) -> Result<Applied, Error> {
    for _ in 0..ATTEMPTS {
        let mut tx = db.writer().begin().await?;
        if !store::orders::remember_event(&mut tx, &event.provider, &event.event_id).await? {
            return Ok(Applied::Duplicate);
        }
        let Some(order) =
            store::orders::by_provider_order(&mut tx, &event.provider, &event.provider_order_id)
                .await?
        else {
            // Not remembered: the order may not be stored yet, so a redelivery is tried.
            return Ok(Applied::UnknownOrder);
        };
        let next = match order.state.apply(state_event(&order, &event.kind)) {
            Step::Stale => {
                tx.commit().await?;
                return Ok(Applied::Stale(order.state));
            }
            Step::Refused => return Ok(Applied::Refused(order.state)),
            Step::To(state) => moved(&order, state, &event.kind),
        };
        if !store::orders::advance(&mut tx, &order, &next).await? {
            // Another event moved the order meanwhile: read it again.
            continue;
        }
        if !post_to_ledger(&mut tx, &order, &event.kind).await? {
            // The same money movement arrived under another event id (a refund we made,
            // then its webhook): already applied, so nothing of this one is kept.
            return Ok(Applied::Duplicate);
        }
        if let Some(news) = news(&order, &next, &event.kind) {
            outbox.enqueue_event(&mut tx, &news).await?;
        }
        tx.commit().await?;
        outbox.wake();
        return Ok(Applied::Moved(next.state));
    }
    Err(Error::Unavailable {
        message: "the order kept changing; retry shortly".into(),
        retry_after: Some(std::time::Duration::from_secs(1)),
    })
}

/// The event other services hear about a move: a capture or a refund.
fn news(order: &OrderRow, next: &OrderRow, kind: &EventKind) -> Option<PendingEvent> {
    match kind {
        EventKind::Captured { .. } => Some(pending_event(
            &order.id,
            &PaymentCaptured {
                order_id: order.id.clone(),
                course_id: order.course_id.clone(),
                learner_id: order.learner_id.clone(),
                currency: order.currency.clone(),
                amount_minor: next.captured_minor,
                provider: order.provider.clone(),
            },
        )),
        EventKind::Refunded { amount, .. } => Some(pending_event(
            &order.id,
            &PaymentRefunded {
                order_id: order.id.clone(),
                course_id: order.course_id.clone(),
                learner_id: order.learner_id.clone(),
                currency: order.currency.clone(),
                amount_minor: *amount,
                refunded_total_minor: next.refunded_minor,
                full: next.state == OrderState::Refunded,
            },
        )),
        EventKind::AttemptFailed | EventKind::Authorized { .. } | EventKind::Expired => None,
    }
}

fn state_event(order: &OrderRow, kind: &EventKind) -> Event {
    match kind {
        EventKind::AttemptFailed => Event::AttemptFailed,
        EventKind::Authorized { .. } => Event::Authorized,
        EventKind::Captured { .. } => Event::Captured,
        EventKind::Refunded { amount, .. } => Event::Refunded {
            full: order.refunded_minor + amount >= order.captured_minor,
        },
        EventKind::Expired => Event::Expired,
    }
}

/// The order after the event moved it to `state`.
fn moved(order: &OrderRow, state: OrderState, kind: &EventKind) -> OrderRow {
    let mut next = OrderRow {
        state,
        ..order.clone()
    };
    match kind {
        EventKind::Authorized { payment_id } => next.payment_id = Some(payment_id.clone()),
        EventKind::Captured {
            payment_id, amount, ..
        } => {
            next.payment_id = Some(payment_id.clone());
            next.captured_minor = *amount;
            next.captured_at = Some(duovarsity_common::time::now_millis());
        }
        EventKind::Refunded { amount, .. } => next.refunded_minor += amount,
        EventKind::AttemptFailed | EventKind::Expired => {}
    }
    next
}

fn sale(order: &OrderRow) -> Sale {
    Sale {
        learner: order.learner_id.clone(),
        instructor: order.instructor_id.clone(),
        course: order.course_id.clone(),
        provider: order.provider.clone(),
        currency: order.currency.clone(),
        instructor_share_bps: order.instructor_share_bps,
    }
}

/// Posts the money of a capture or a refund; false if that movement is already in the
/// ledger.
async fn post_to_ledger(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    order: &OrderRow,
    kind: &EventKind,
) -> Result<bool, Error> {
    let invalid = |error: crate::ledger::LedgerError| Error::invalid("amount", error.to_string());
    match kind {
        EventKind::Captured { amount, fee, .. } => {
            let transaction = sale(order).capture(*amount, *fee).map_err(invalid)?;
            let entry = Entry {
                kind: "capture",
                reference: &order.id,
                order_id: &order.id,
                amount: *amount,
            };
            store::ledger::record(tx, &entry, &transaction).await
        }
        EventKind::Refunded { refund_id, amount } => {
            let transaction = sale(order)
                .refund(order.captured_minor, order.refunded_minor, *amount)
                .map_err(invalid)?;
            let entry = Entry {
                kind: "refund",
                reference: refund_id,
                order_id: &order.id,
                amount: *amount,
            };
            store::ledger::record(tx, &entry, &transaction).await
        }
        EventKind::AttemptFailed | EventKind::Authorized { .. } | EventKind::Expired => Ok(true),
    }
}
