//! The gRPC handlers of `duovarsity.payment.v1.PaymentService`: each decodes the request,
//! takes the caller, and calls one domain function of [`Payments`]. Mutating calls run
//! under the caller's `Idempotency-Key` ([`Payments::once`]); webhooks are verified over
//! their raw bodies before anything is read from them.

use std::future::Future;

use duovarsity_common::Error;
use duovarsity_common::auth::{Claims, caller};
use duovarsity_proto::google::api::HttpBody;
use duovarsity_proto::payment::payment_service_server::PaymentService;
use duovarsity_proto::payment::*;
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use crate::Payments;
use crate::courses::Caller;
use crate::idempotency::{Claim, fingerprint};
use crate::orders::Applied;
use crate::webhooks::{self, Notice, WebhookError};

#[derive(Clone)]
pub struct PaymentGrpc(pub Payments);

/// The `Idempotency-Key` header, if the client sent one.
fn idempotency_key(metadata: &MetadataMap) -> Result<Option<String>, Error> {
    metadata
        .get("idempotency-key")
        .map(|value| {
            value.to_str().map(str::to_string).map_err(|_| {
                Error::invalid(
                    "Idempotency-Key",
                    "must be 1 to 255 visible ASCII characters",
                )
            })
        })
        .transpose()
}

fn header<'a>(metadata: &'a MetadataMap, name: &str) -> Result<&'a str, Error> {
    metadata
        .get(name)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| Error::invalid(name, "is required"))
}

impl Payments {
    /// Runs `run` with the caller, their credentials and the message, once per
    /// `Idempotency-Key` of the caller (Stripe's semantics, see [`crate::idempotency`]);
    /// without a key it simply runs.
    async fn once<Req, Resp, Fut>(
        &self,
        method: &str,
        request: Request<Req>,
        run: impl FnOnce(Claims, Caller, Req) -> Fut,
    ) -> Result<Response<Resp>, Status>
    where
        Req: Message,
        Resp: Message + Default,
        Fut: Future<Output = Result<Resp, Error>>,
    {
        let claims = caller(&request)?.clone();
        let key = idempotency_key(request.metadata())?;
        let on_behalf = Caller::of(&request);
        let message = request.into_inner();
        let Some(key) = key else {
            return Ok(Response::new(run(claims, on_behalf, message).await?));
        };
        let print = fingerprint(method, &message.encode_to_vec());
        let scope = claims.sub.clone();
        let answer = match self.idempotency.claim(&scope, &key, &print).await? {
            Claim::Replay(stored) => Resp::decode(stored.as_slice())
                .map_err(|error| Error::internal("a stored idempotent answer", &error))?,
            Claim::First => match run(claims, on_behalf, message).await {
                Ok(answer) => {
                    self.idempotency
                        .complete(&scope, &key, &answer.encode_to_vec())
                        .await?;
                    answer
                }
                Err(error) => {
                    // Failures here change nothing (a refund the provider made is applied by
                    // its webhook), so a retry with the key runs again.
                    self.idempotency.release(&scope, &key).await?;
                    return Err(error.into());
                }
            },
        };
        Ok(Response::new(answer))
    }

    /// Applies a verified webhook's notice and says how it went.
    async fn apply_notice(&self, notice: Option<Notice>) -> Result<WebhookAck, Error> {
        let Some(mut notice) = notice else {
            return Ok(self.webhook_outcome("any", "ignored"));
        };
        let provider = notice.event.provider.clone();
        if !notice.fee_known {
            // Stripe's event names the charge without its fee: ask the API.
            let client = self.providers.named(&provider)?;
            if let crate::provider::Settlement::Captured { fee: known, .. } = client
                .settlement(&notice.event.provider_order_id)
                .await
                .map_err(crate::providers::provider_error)?
                && let crate::orders::EventKind::Captured { fee, .. } = &mut notice.event.kind
            {
                *fee = known;
            }
        }
        let outcome = match crate::orders::apply(&self.db, &self.outbox, &notice.event).await? {
            Applied::Moved(_) => "verified",
            Applied::Duplicate => "duplicate",
            Applied::Stale(_) => "ignored",
            Applied::Refused(state) => {
                // Ahead of the order (a refund before its capture arrived): not
                // remembered, and not acknowledged, so the provider delivers it again.
                self.webhook_outcome(&provider, "deferred");
                return Err(Error::Unavailable {
                    message: format!(
                        "the order is {state} and cannot take this event yet; deliver it again later"
                    ),
                    retry_after: Some(std::time::Duration::from_secs(30)),
                });
            }
            Applied::UnknownOrder => {
                self.webhook_outcome(&provider, "unknown_order");
                // Not remembered: the provider retries, and an order stored meanwhile
                // gets the event.
                return Err(Error::not_found(format!(
                    "{provider} order {}",
                    notice.event.provider_order_id
                )));
            }
        };
        Ok(self.webhook_outcome(&provider, outcome))
    }

    fn webhook_outcome(&self, provider: &str, outcome: &'static str) -> WebhookAck {
        metrics::counter!("payment_webhooks_total", "provider" => provider.to_string(), "outcome" => outcome)
            .increment(1);
        WebhookAck {
            outcome: outcome.to_string(),
        }
    }

    fn refused_webhook(&self, provider: &str, error: WebhookError) -> Error {
        match error {
            WebhookError::Signature(error) => {
                self.webhook_outcome(provider, "rejected");
                Error::permission_denied(
                    "WEBHOOK_SIGNATURE_INVALID",
                    format!("the {provider} webhook signature does not verify: {error}"),
                )
            }
            WebhookError::Body(detail) => {
                self.webhook_outcome(provider, "malformed");
                Error::invalid("body", detail)
            }
        }
    }

    fn not_configured(provider: &str) -> Error {
        Error::FailedPrecondition {
            reason: "PROVIDER_NOT_CONFIGURED",
            message: format!("{provider} is not configured on this platform"),
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[tonic::async_trait]
impl PaymentService for PaymentGrpc {
    async fn checkout(&self, request: Request<CheckoutRequest>) -> Result<Response<Order>, Status> {
        let payments = &self.0;
        payments
            .once(
                "Checkout",
                request,
                |claims, on_behalf, message| async move {
                    payments
                        .checkout(&claims, &on_behalf, &message.course_id)
                        .await
                },
            )
            .await
    }

    async fn confirm_payment(
        &self,
        request: Request<ConfirmPaymentRequest>,
    ) -> Result<Response<Order>, Status> {
        let payments = &self.0;
        payments
            .once("ConfirmPayment", request, |claims, _, message| async move {
                payments.confirm(&claims, message).await
            })
            .await
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let claims = caller(&request)?.clone();
        let order_id = request.into_inner().order_id;
        Ok(Response::new(self.0.get_order(&claims, &order_id).await?))
    }

    async fn list_my_orders(
        &self,
        request: Request<ListMyOrdersRequest>,
    ) -> Result<Response<ListMyOrdersResponse>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0.list_my_orders(&claims, request.into_inner()).await?,
        ))
    }

    async fn refund_order(
        &self,
        request: Request<RefundOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let payments = &self.0;
        payments
            .once("RefundOrder", request, |claims, _, message| async move {
                payments.refund(&claims, message).await
            })
            .await
    }

    async fn list_my_receipts(
        &self,
        request: Request<ListMyReceiptsRequest>,
    ) -> Result<Response<ListMyReceiptsResponse>, Status> {
        let claims = caller(&request)?.clone();
        Ok(Response::new(
            self.0
                .list_my_receipts(&claims, request.into_inner())
                .await?,
        ))
    }

    async fn get_course_earnings(
        &self,
        request: Request<GetCourseEarningsRequest>,
    ) -> Result<Response<CourseEarnings>, Status> {
        let claims = caller(&request)?.clone();
        let on_behalf = Caller::of(&request);
        let course_id = request.into_inner().course_id;
        Ok(Response::new(
            self.0
                .course_earnings(&claims, &on_behalf, &course_id)
                .await?,
        ))
    }

    async fn get_ledger_summary(
        &self,
        _request: Request<GetLedgerSummaryRequest>,
    ) -> Result<Response<LedgerSummary>, Status> {
        Ok(Response::new(self.0.ledger_summary().await?))
    }

    async fn razorpay_webhook(
        &self,
        request: Request<HttpBody>,
    ) -> Result<Response<WebhookAck>, Status> {
        let payments = &self.0;
        let keys = payments
            .providers
            .razorpay
            .as_ref()
            .ok_or_else(|| Payments::not_configured("razorpay"))?;
        let signature = header(request.metadata(), "x-razorpay-signature")?.to_string();
        let event_id = header(request.metadata(), "x-razorpay-event-id")?.to_string();
        let body = request.into_inner().data;
        let notice = webhooks::razorpay(
            keys.webhook_secret.expose().as_bytes(),
            &body,
            &signature,
            &event_id,
        )
        .map_err(|error| payments.refused_webhook("razorpay", error))?;
        Ok(Response::new(payments.apply_notice(notice).await?))
    }

    async fn stripe_webhook(
        &self,
        request: Request<HttpBody>,
    ) -> Result<Response<WebhookAck>, Status> {
        let payments = &self.0;
        let secret = payments
            .providers
            .stripe_webhook_secret
            .as_ref()
            .ok_or_else(|| Payments::not_configured("stripe"))?;
        let signature = header(request.metadata(), "stripe-signature")?.to_string();
        let body = request.into_inner().data;
        let notice = webhooks::stripe(
            secret.expose().as_bytes(),
            &body,
            &signature,
            unix_now(),
            payments.providers.stripe_tolerance_secs,
        )
        .map_err(|error| payments.refused_webhook("stripe", error))?;
        Ok(Response::new(payments.apply_notice(notice).await?))
    }
}
