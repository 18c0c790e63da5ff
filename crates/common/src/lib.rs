//! What every Duovarsity service shares, in layers. A module imports only from layers below
//! its own (`scripts/check-import-cycles.py`, run by `make lint`, fails on a cycle):
//!
//! 1. Leaves: [`error`] (the error vocabulary), [`secret`], [`time`] (clock helpers),
//!    [`backoff`] (the pauses of retry loops),
//!    [`health`] (readiness probes), [`digest`], [`enums`] (stored names of protobuf
//!    enums).
//! 2. Subsystems, each owning its settings type: [`telemetry`] (with `LogFormat`),
//!    [`discovery`], [`pubsub`], [`cache`], [`gcra`] (rate limits), [`db`] (storage, and its errors in the
//!    vocabulary), [`events`], [`auth`], [`validate`], [`reload`].
//! 3. The gRPC kit: [`grpc`], [`admin`], and the typed [`clients`] services call each
//!    other with.
//!
//! Configuration is a crate of its own above this one (`duovarsity-config`): it reads the
//! settings and assembles each subsystem's, so nothing here knows the `Config` type.
//! Backends are chosen by those settings behind small types here, never by branches inside
//! service handlers.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod backoff;
pub mod cache;
pub mod clients;
pub mod db;
pub mod digest;
pub mod discovery;
pub mod enums;
pub mod error;
pub mod events;
pub mod flags;
pub mod gcra;
pub mod grpc;
pub mod health;
pub mod pubsub;
pub mod reload;
pub mod secret;
pub mod telemetry;
pub mod time;
pub mod validate;

pub use error::{Error, FieldViolation, Result};
pub use secret::Secret;
