//! The AI-routing service's SQL: usage rows and, without Redis, budget counters. Rules
//! live in the domain modules ([`crate::budget`], [`crate::usage`]); this only stores.

pub mod budgets;
pub mod usage;

use duovarsity_common::db::Migrations;

/// The service's outbox of `ai.usage` events.
pub const OUTBOX_TABLE: &str = "ai_outbox";

/// The service's schema (version range 6000), one SQL file per migration for both
/// backends.
pub fn migrations() -> Migrations {
    Migrations::default()
        .with(6001, "usage", |_| {
            include_str!("../../migrations/6001_usage.sql").to_string()
        })
        .with(6002, "budgets", |_| {
            include_str!("../../migrations/6002_budgets.sql").to_string()
        })
        .with_outbox(OUTBOX_TABLE, 6003)
        .with(6004, "usage_lesson", |_| {
            include_str!("../../migrations/6004_usage_lesson.sql").to_string()
        })
}
