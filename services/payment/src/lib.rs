//! The payment service's domain core: what money may do, independent of storage and
//! transport.
//!
//! - [`ledger`]: double-entry transactions that cannot be built unbalanced, and the
//!   postings of a capture and a refund (learner receivable, provider balance and fees,
//!   instructor payable, platform revenue).
//! - [`state`]: the forward-only order state machine; a late or out-of-order provider
//!   event never moves an order backwards.
//! - [`provider`]: what the service asks of a payment provider; [`razorpay`] and
//!   [`stripe`] are the HTTP clients of the two providers' APIs.
//! - [`orders`]: applying a provider's event to an order exactly once in effect (event
//!   ids remembered, forward-only moves, the ledger posted in the same transaction).
//! - [`webhooks`]: provider webhooks, signature first, to provider events.
//! - [`store`]: the SQL (ledger rows, balances as sums of postings).
//! - [`idempotency`]: Stripe's `Idempotency-Key` semantics over a table, atomic across
//!   replicas (first runs, same replays, different is refused, duplicates wait).
//! - [`signature`]: the providers' HMAC schemes (Razorpay payment and webhook signatures,
//!   Stripe's `Stripe-Signature` with its replay window), checked in constant time.
//!
//! The crate is not in the platform's module table yet: it has no gRPC API, orders,
//! webhooks or saga so far (docs/adding-a-service.md is how it will join).
#![forbid(unsafe_code)]

pub mod idempotency;
pub mod ledger;
pub mod orders;
pub mod provider;
pub mod razorpay;
pub mod signature;
pub mod state;
pub mod store;
pub mod stripe;
pub mod webhooks;

/// The payment service's schema (version range 5000): one SQL file per migration for
/// both backends, `{bytes}` standing for the binary column type.
pub fn migrations() -> duovarsity_common::db::Migrations {
    use duovarsity_common::db::Backend;
    let bytes = |backend| match backend {
        Backend::Sqlite => "BLOB",
        Backend::Postgres => "BYTEA",
    };
    duovarsity_common::db::Migrations::default()
        .with(5001, "idempotency", move |backend| {
            include_str!("../migrations/5001_idempotency.sql").replace("{bytes}", bytes(backend))
        })
        .with(5002, "ledger", |_| {
            include_str!("../migrations/5002_ledger.sql").to_string()
        })
        .with(5003, "orders", |_| {
            include_str!("../migrations/5003_orders.sql").to_string()
        })
}
