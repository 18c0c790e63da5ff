//! Display names of learners for leaderboards, from the user events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use duovarsity_common::Error;
use duovarsity_common::db::Database;

use crate::store::learners as store;

/// Display names of learners, cached for a minute (a rename shows within it).
#[derive(Clone)]
pub struct Names {
    db: Database,
    cache: moka::sync::Cache<String, Arc<str>>,
}

impl Names {
    pub fn new(db: Database) -> Self {
        Self {
            db,
            cache: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// The names of `ids` (an unknown learner's is empty).
    pub async fn of(&self, ids: &[&str]) -> Result<HashMap<String, Arc<str>>, Error> {
        let mut found = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match self.cache.get(*id) {
                Some(name) => {
                    found.insert((*id).to_string(), name);
                }
                None => missing.push((*id).to_string()),
            }
        }
        if !missing.is_empty() {
            for (id, name) in store::names(&self.db, &missing).await? {
                let name: Arc<str> = name.into();
                self.cache.insert(id.clone(), name.clone());
                found.insert(id, name);
            }
        }
        Ok(found)
    }
}
