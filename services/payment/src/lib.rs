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
//! - [`signature`]: the providers' HMAC schemes (Razorpay payment and webhook signatures,
//!   Stripe's `Stripe-Signature` with its replay window), checked in constant time.
//!
//! The service around it (module, gRPC API, store, provider clients, webhooks, saga) is
//! issue 9's remaining work; see docs/adding-a-service.md for how it joins the platform.
#![forbid(unsafe_code)]

pub mod ledger;
pub mod provider;
pub mod razorpay;
pub mod signature;
pub mod state;
pub mod stripe;
