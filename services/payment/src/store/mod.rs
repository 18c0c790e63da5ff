//! The payment service's SQL, working inside the transactions it is handed. Rules live
//! in the domain modules ([`crate::ledger`], [`crate::state`]); this only stores.

pub mod idempotency;
pub mod ledger;
pub mod orders;
