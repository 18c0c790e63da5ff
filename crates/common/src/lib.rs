//! What every Duovarsity service shares: configuration, telemetry, the error vocabulary,
//! SQL storage, access-token auth and the gRPC server kit. Backends are chosen by
//! configuration behind small types here, never by branches inside service handlers.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod cache;
pub mod config;
pub mod db;
pub mod digest;
pub mod discovery;
pub mod error;
pub mod events;
pub mod grpc;
pub mod module;
pub mod pubsub;
pub mod reload;
pub mod secret;
pub mod telemetry;
pub mod validate;

pub use config::Config;
pub use error::{Error, FieldViolation, Result};
pub use secret::Secret;
