//! The payment service (`duovarsity.payment.v1.PaymentService`): paid enrollment through
//! Razorpay or Stripe, taking money exactly once and granting access exactly when it is
//! paid.
//!
//! Rooms: [`grpc`] holds thin handlers (with the `Idempotency-Key` wrapper and the webhook
//! endpoints); the rules live in `checkout` (orders for pending enrollments, Razorpay's
//! confirmation), `refunds`, `billing` (orders, receipts, earnings, ledger balances) and
//! [`reconcile`] (missed webhooks, abandoned orders); `convert` turns rows into protobuf;
//! [`store`] runs SQL and nothing else.
//!
//! The money core, independent of transport:
//! - [`ledger`]: double-entry transactions that cannot be built unbalanced, and the
//!   postings of a capture and a refund (learner receivable, provider balance and fees,
//!   instructor payable, platform revenue);
//! - [`state`]: the forward-only order state machine; a late or out-of-order provider
//!   event never moves an order backwards;
//! - [`orders`]: applying a provider's event exactly once in effect (event ids remembered,
//!   compare-and-set moves, the ledger and the `payment.v1` event in the same
//!   transaction);
//! - [`provider`]: what the service asks of a provider; [`razorpay`] and [`stripe`] are
//!   HTTP clients of their APIs, [`providers`] picks them from the configuration, and
//!   [`sandbox`] is the built-in Razorpay test mode `duovarsity up` serves;
//! - [`webhooks`] and [`signature`]: provider webhooks, signature first;
//! - [`idempotency`]: Stripe's `Idempotency-Key` semantics, atomic across replicas.
//!
//! The saga: `payment.captured` and `payment.refunded` go out through the payment outbox;
//! the course service activates or revokes the enrollment, the notification service sends
//! the receipt or refund notice.
#![forbid(unsafe_code)]

mod billing;
mod checkout;
mod convert;
pub mod courses;
pub mod grpc;
pub mod idempotency;
pub mod ledger;
pub mod orders;
pub mod provider;
pub mod providers;
pub mod razorpay;
pub mod reconcile;
mod refunds;
pub mod sandbox;
pub mod signature;
pub mod state;
pub mod store;
pub mod stripe;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use duovarsity_common::db::{Backend, Database, Migrations};
use duovarsity_common::events::EventBus;
use duovarsity_common::events::outbox::Outbox;
use duovarsity_common::grpc::GrpcServer;
use duovarsity_config::Config;
use duovarsity_module::{BackgroundTask, OpenError, ServiceContext, ServiceModule};
use duovarsity_proto::payment::payment_service_server::PaymentServiceServer;
use tokio_util::sync::CancellationToken;

use crate::courses::Courses;
use crate::idempotency::Idempotency;
use crate::providers::Providers;
use crate::store::orders::OrderRow;

pub const SERVICE: &str = "payment";
/// The payment service's outbox table.
pub const OUTBOX_TABLE: &str = "payment_outbox";

/// The payment service's schema (version range 5000): one SQL file per migration for
/// both backends, `{bytes}` standing for the binary column type.
pub fn migrations() -> Migrations {
    let bytes = |backend| match backend {
        Backend::Sqlite => "BLOB",
        Backend::Postgres => "BYTEA",
    };
    Migrations::default()
        .with(5001, "idempotency", move |backend| {
            include_str!("../migrations/5001_idempotency.sql").replace("{bytes}", bytes(backend))
        })
        .with(5002, "ledger", |_| {
            include_str!("../migrations/5002_ledger.sql").to_string()
        })
        .with(5003, "orders", |_| {
            include_str!("../migrations/5003_orders.sql").to_string()
        })
        .with_outbox(OUTBOX_TABLE, 5004)
}

/// The business rules that come from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub refund_window: Duration,
    pub instructor_share_bps: u32,
    pub reconcile_after: Duration,
    pub order_ttl: Duration,
}

impl Rules {
    pub fn from_config(config: &Config) -> Self {
        Self {
            refund_window: Duration::from_secs(
                u64::from(config.payment_refund_window_days) * 86_400,
            ),
            instructor_share_bps: config.payment_instructor_share_bps,
            reconcile_after: Duration::from_secs(config.payment_reconcile_after_secs),
            order_ttl: Duration::from_secs(config.payment_order_ttl_secs),
        }
    }
}

/// The payment domain, shared by the handlers and the reconciliation job.
#[derive(Clone)]
pub struct Payments {
    db: Database,
    outbox: Outbox,
    providers: Arc<Providers>,
    courses: Courses,
    idempotency: Idempotency,
    rules: Rules,
    /// `checkout-provider`: which provider new orders use, for a gradual move.
    flags: duovarsity_common::flags::Flags,
}

impl Payments {
    fn refund_window_ms(&self) -> i64 {
        i64::try_from(self.rules.refund_window.as_millis()).unwrap_or(i64::MAX)
    }

    fn order_view(&self, order: &OrderRow) -> duovarsity_proto::payment::Order {
        convert::order_to_proto(order, &self.providers, self.refund_window_ms())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("payment database: {0}")]
    Database(#[from] duovarsity_common::db::OpenError),
    #[error("{0}")]
    Providers(#[from] providers::ProvidersError),
    #[error("DUOVARSITY_COURSE_SERVICE_URL: {0}")]
    CourseUrl(#[from] tonic::transport::Error),
}

pub struct PaymentModule {
    payments: Payments,
}

impl PaymentModule {
    /// `with_gateway`: the gateway runs in this process (the sandbox can be served).
    async fn start(
        config: &Config,
        with_gateway: bool,
        flags: duovarsity_common::flags::Flags,
    ) -> Result<Self, StartError> {
        let db = Database::open(&config.database(SERVICE), migrations()).await?;
        let providers = Providers::from_config(config, with_gateway)?;
        Ok(Self {
            payments: Payments {
                idempotency: Idempotency::new(db.clone()),
                outbox: Outbox::new(OUTBOX_TABLE),
                courses: Courses::new(config.service_channel("course", Courses::endpoint)?),
                providers: Arc::new(providers),
                rules: Rules::from_config(config),
                flags,
                db,
            },
        })
    }

    pub fn payments(&self) -> &Payments {
        &self.payments
    }
}

#[async_trait]
impl ServiceModule for PaymentModule {
    const NAME: &'static str = SERVICE;
    const GRPC_SERVICES: &'static [&'static str] =
        &[duovarsity_proto::payment::payment_service_server::SERVICE_NAME];

    fn migrations() -> Migrations {
        migrations()
    }

    async fn open(context: &ServiceContext) -> Result<Self, OpenError> {
        let flags = context.flags().await?.flags;
        Ok(Self::start(&context.config, context.with_gateway, flags).await?)
    }

    fn database(&self) -> &Database {
        &self.payments.db
    }

    fn register(&self, server: GrpcServer) -> GrpcServer {
        server.add_service(PaymentServiceServer::new(grpc::PaymentGrpc(
            self.payments.clone(),
        )))
    }

    /// Publishes the outbox and runs the reconciliation job.
    fn background(
        &self,
        bus: Arc<dyn EventBus>,
        shutdown: CancellationToken,
    ) -> Vec<BackgroundTask> {
        let relay = self.payments.outbox.relay(self.payments.db.clone(), bus);
        vec![
            Box::pin(relay.run(shutdown.clone())),
            Box::pin(self.payments.clone().run_reconciliation(shutdown)),
        ]
    }

    fn http_routes(&self) -> Option<axum::Router> {
        self.payments.providers.sandbox.as_ref().map(|s| s.router())
    }
}
