//! The discovery service's SQL over sqlx `Any`, and nothing else: the catalog rows and
//! their change feed ([`catalog`]), and what learners hold, finished and took together
//! ([`learners`]).

pub mod catalog;
pub mod learners;

pub use catalog::*;
pub use learners::*;

use duovarsity_common::db::Migrations;
use duovarsity_common::error::Error;
use duovarsity_common::events::consumer::batch::placeholders;
use sqlx::any::AnyRow;

/// Events this service has applied (the idempotent consumer's table).
pub const PROCESSED_TABLE: &str = "discovery_processed_events";

/// The service's schema (version range 8000).
pub fn migrations() -> Migrations {
    Migrations::portable(sqlx::migrate!("./migrations")).with_applied_events(PROCESSED_TABLE, 8002)
}

/// Each row decoded as `T` (the reads' one shape).
fn each<T>(
    rows: &[AnyRow],
    decode: impl Fn(&AnyRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, Error> {
    Ok(rows
        .iter()
        .map(decode)
        .collect::<Result<_, sqlx::Error>>()?)
}
