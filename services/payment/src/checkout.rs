//! Checkout and confirmation: the order for a learner's paid enrollment.
//!
//! - The price and the instructor come from the course service (never from the client),
//!   and the learner's enrollment must be waiting for payment.
//! - At most one open order per learner and course: the partial unique index on the
//!   orders table decides between racing requests on any replica; the loser waits for the
//!   winner's order and answers it, so concurrent checkouts never make a second order or
//!   a second provider call.
//! - The order row is written first, then the provider's order is created and attached.
//!   If the provider is down or refuses, the row is deleted: nothing half-written, and the
//!   learner gets a 503 (or the provider's refusal) to retry.
//! - Razorpay's checkout answer is trusted only after its signature is checked against the
//!   provider order id WE stored; then the provider itself is asked what was paid.

use std::time::{Duration, Instant};

use duovarsity_common::Error;
use duovarsity_common::auth::Claims;
use duovarsity_common::flags::FlagContext;
use duovarsity_common::time::now_millis;
use duovarsity_proto::payment::{ConfirmPaymentRequest, Order};

use crate::Payments;
use crate::courses::{Caller, awaits_payment, has_access};
use crate::orders::{self, Applied, EventKind, ProviderEvent};
use crate::provider::{OrderRequest, Provider, Settlement};
use crate::providers::provider_error;
use crate::signature::verify_razorpay_payment;
use crate::store;
use crate::store::orders::OrderRow;

/// How long a checkout waits for a concurrent checkout of the same course to get its
/// provider order.
const WAIT_FOR_RACE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// The flag naming the provider new orders use (a string variant: `razorpay`, `stripe`).
const CHECKOUT_PROVIDER: &str = "checkout-provider";

impl Payments {
    pub async fn checkout(
        &self,
        claims: &Claims,
        caller: &Caller,
        course_id: &str,
    ) -> Result<Order, Error> {
        let context = FlagContext::caller(claims).with_course(course_id);
        let chosen = self.flags.string(CHECKOUT_PROVIDER, &context);
        let provider = self.providers.checkout_for(chosen.as_deref())?;
        let course = self.courses.course(caller, course_id).await?;
        let Some(price) = course.price.clone().filter(|price| price.amount_minor > 0) else {
            return Err(Error::FailedPrecondition {
                reason: "COURSE_IS_FREE",
                message: format!(
                    "course {} is free: enroll with POST /v1/courses/{}/enrollments",
                    course.id, course.id
                ),
            });
        };
        match self.courses.my_enrollment(caller, &course.id).await? {
            Some(enrollment) if awaits_payment(&enrollment) => {}
            Some(enrollment) if has_access(&enrollment) => {
                return Err(Error::FailedPrecondition {
                    reason: "ALREADY_ENROLLED",
                    message: "you already have access to this course".into(),
                });
            }
            _ => {
                return Err(Error::FailedPrecondition {
                    reason: "ENROLLMENT_REQUIRED",
                    message: format!(
                        "enroll first (POST /v1/courses/{}/enrollments); the enrollment waits \
                         for this payment",
                        course.id
                    ),
                });
            }
        }
        let started = Instant::now();
        loop {
            if let Some(open) = store::orders::open_for(&self.db, &claims.sub, &course.id).await? {
                if open.provider_order_id.is_some() {
                    return Ok(self.order_view(&open));
                }
                if started.elapsed() > WAIT_FOR_RACE {
                    return Err(Error::Unavailable {
                        message: "a checkout of this course is still in progress".into(),
                        retry_after: Some(Duration::from_secs(1)),
                    });
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
            let now = now_millis();
            let order = OrderRow {
                id: uuid::Uuid::now_v7().to_string(),
                learner_id: claims.sub.clone(),
                course_id: course.id.clone(),
                instructor_id: course.instructor_id.clone(),
                amount_minor: price.amount_minor,
                currency: price.currency.to_uppercase(),
                instructor_share_bps: self.rules.instructor_share_bps,
                provider: provider.name().to_string(),
                provider_order_id: None,
                client_secret: None,
                state: crate::state::OrderState::Created,
                payment_id: None,
                captured_minor: 0,
                refunded_minor: 0,
                captured_at: None,
                created_at: now,
                updated_at: now,
            };
            let mut tx = self.db.writer().begin().await?;
            let inserted = store::orders::insert(&mut tx, &order).await?;
            tx.commit().await?;
            if inserted {
                return self.open_with_provider(provider.as_ref(), order).await;
            }
        }
    }

    /// Creates the provider's order for `order` (stored without one) and attaches it.
    async fn open_with_provider(
        &self,
        provider: &dyn Provider,
        mut order: OrderRow,
    ) -> Result<Order, Error> {
        let request = OrderRequest {
            reference: order.id.clone(),
            amount: order.amount_minor,
            currency: order.currency.clone(),
        };
        match provider.create_order(&request).await {
            Ok(created) => {
                store::orders::attach_provider_order(
                    &self.db,
                    &order.id,
                    &created.id,
                    created.client_secret.as_deref(),
                )
                .await?;
                metrics::counter!("payment_checkouts_total", "provider" => provider.name(), "outcome" => "created")
                    .increment(1);
                order.provider_order_id = Some(created.id);
                order.client_secret = created.client_secret;
                Ok(self.order_view(&order))
            }
            Err(error) => {
                metrics::counter!("payment_checkouts_total", "provider" => provider.name(), "outcome" => "provider_failed")
                    .increment(1);
                store::orders::delete_unstarted(&self.db, Some(&order.id), i64::MAX).await?;
                Err(provider_error(error))
            }
        }
    }

    /// Razorpay Checkout's answer for one of the caller's orders.
    pub async fn confirm(
        &self,
        claims: &Claims,
        request: ConfirmPaymentRequest,
    ) -> Result<Order, Error> {
        let order = self.own_order(claims, &request.order_id).await?;
        let keys = self
            .providers
            .razorpay
            .as_ref()
            .filter(|_| order.provider == "razorpay")
            .ok_or_else(|| Error::FailedPrecondition {
                reason: "NOT_A_RAZORPAY_ORDER",
                message: format!("order {} is paid with {}", order.id, order.provider),
            })?;
        let provider_order_id = order
            .provider_order_id
            .as_deref()
            .ok_or_else(|| Error::not_found(format!("order {}", order.id)))?;
        verify_razorpay_payment(
            keys.key_secret.expose().as_bytes(),
            provider_order_id,
            &request.razorpay_payment_id,
            &request.razorpay_signature,
        )
        .map_err(|error| Error::PermissionDenied {
            reason: "PAYMENT_SIGNATURE_INVALID",
            message: format!("the payment signature is not valid for this order: {error}"),
        })?;
        self.settle(&order).await?;
        self.reread(&order.id).await
    }

    /// Asks the provider where the order's money stands and applies what it says (the
    /// confirmation, and the reconciliation of missed webhooks).
    pub async fn settle(&self, order: &OrderRow) -> Result<Applied, Error> {
        let Some(provider_order_id) = order.provider_order_id.clone() else {
            return Ok(Applied::Stale(order.state));
        };
        let provider = self.providers.named(&order.provider)?;
        let settlement = provider
            .settlement(&provider_order_id)
            .await
            .map_err(provider_error)?;
        let (name, kind) = match settlement {
            Settlement::Open => return Ok(Applied::Stale(order.state)),
            Settlement::Authorized { payment_id } => {
                ("authorized", EventKind::Authorized { payment_id })
            }
            Settlement::Captured {
                payment_id,
                amount,
                fee,
            } => (
                "captured",
                EventKind::Captured {
                    payment_id,
                    amount,
                    fee,
                },
            ),
            Settlement::Failed => ("failed", EventKind::AttemptFailed),
        };
        let event = ProviderEvent {
            provider: order.provider.clone(),
            event_id: format!("settlement:{provider_order_id}:{name}"),
            provider_order_id,
            kind,
        };
        orders::apply(&self.db, &self.outbox, &event).await
    }
}
