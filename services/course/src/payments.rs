//! The course side of the payment saga: the course service consumes `payment.v1` and
//! grants or ends access.
//!
//! - `payment.captured` activates the learner's enrollment (pending_payment, or a
//!   cancelled one, becomes active; a paid learner without one gets one) and publishes
//!   `enrollment.activated`;
//! - a full `payment.refunded` cancels it and publishes `enrollment.revoked`; a partial
//!   refund leaves access as it is.
//!
//! Each event is applied in the consumer's transaction, which records its id, so a
//! redelivered event changes nothing; the enrollment events go through the course outbox
//! in that same transaction.

use std::sync::Arc;

use async_trait::async_trait;
use duovarsity_common::Error;
use duovarsity_common::events::catalog::{Event, decode};
use duovarsity_common::events::consumer::Handler;
use duovarsity_common::events::pending_event;
use duovarsity_proto::events::{
    EnrollmentActivated, EnrollmentRevoked, Envelope, PaymentCaptured, PaymentRefunded,
};
use sqlx::{Any, Transaction};

use crate::store::CourseStore;

/// The consumer group of the course service on `payment.v1`.
pub const GROUP: &str = "course";

pub struct PaymentEvents {
    pub store: Arc<CourseStore>,
}

#[async_trait]
impl Handler for PaymentEvents {
    async fn handle(
        &self,
        tx: &mut Transaction<'_, Any>,
        envelope: &Envelope,
    ) -> Result<(), Error> {
        match envelope.r#type.as_str() {
            PaymentCaptured::TYPE => {
                let paid: PaymentCaptured = decode(envelope)?;
                let moved = self
                    .store
                    .move_enrollment(
                        tx,
                        (&paid.course_id, &paid.learner_id),
                        &["pending_payment", "cancelled"],
                        "active",
                        true,
                        |e| {
                            pending_event(
                                &e.id,
                                &EnrollmentActivated {
                                    enrollment_id: e.id.clone(),
                                    course_id: e.course_id.clone(),
                                    learner_id: e.learner_id.clone(),
                                },
                            )
                        },
                    )
                    .await?;
                if moved.is_none() {
                    tracing::info!(order = %paid.order_id, "payment for an enrollment that already has access");
                }
                Ok(())
            }
            PaymentRefunded::TYPE => {
                let refund: PaymentRefunded = decode(envelope)?;
                if !refund.full {
                    return Ok(());
                }
                let reason = format!("order {} was refunded", refund.order_id);
                self.store
                    .move_enrollment(
                        tx,
                        (&refund.course_id, &refund.learner_id),
                        &["active", "completed", "pending_payment"],
                        "cancelled",
                        false,
                        |e| {
                            pending_event(
                                &e.id,
                                &EnrollmentRevoked {
                                    enrollment_id: e.id.clone(),
                                    course_id: e.course_id.clone(),
                                    learner_id: e.learner_id.clone(),
                                    reason,
                                },
                            )
                        },
                    )
                    .await?;
                Ok(())
            }
            // Other payment events do not concern access.
            _ => Ok(()),
        }
    }

    async fn committed(&self, _envelope: &Envelope) {
        self.store.outbox().wake();
    }
}
