//! What every goose user of a run shares: the catalog, the gateways, the accounts, and the
//! tallies and timeline the report is made from. Set once before the attack.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use crate::catalog::Catalog;
use crate::live;
use crate::timeline::Timeline;

/// What every user shares, set before the attack.
#[derive(Debug)]
pub struct Plan {
    pub catalog: Catalog,
    /// The gateways, spread over users by their index.
    pub hosts: Vec<String>,
    pub learner_password: String,
    pub instructor: (String, String),
    pub live: live::Tally,
    pub tally: Tally,
    pub timeline: Timeline,
}

/// Outcomes the request metrics do not show.
#[derive(Debug, Default)]
pub struct Tally {
    pub hints: AtomicU64,
    pub hint_cache_hits: AtomicU64,
    pub purchases: AtomicU64,
    pub purchases_not_captured: AtomicU64,
    pub progress_writes: AtomicU64,
    pub announcements_posted: AtomicU64,
}

pub static PLAN: OnceLock<Plan> = OnceLock::new();

pub fn plan() -> &'static Plan {
    PLAN.get().expect("the plan is set before the attack")
}

/// The email of load-test learner `i`, as `duovarsity seed --learners N` creates them.
pub fn learner_email(i: usize) -> String {
    format!("learner-{i}@load.duovarsity.test")
}
