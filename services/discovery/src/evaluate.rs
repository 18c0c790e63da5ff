//! `duovarsity discovery evaluate`: hit-rate@k of the recommender against a popularity
//! baseline, by holding out each learner's last enrollment.
//!
//! For every learner holding at least two courses, the most recent one is taken away:
//! the learner's rows lose it, and the model loses what it added (one learner of that
//! course, one of each pair with the learner's other courses), so nothing of the held-out
//! enrollment leaks into its own prediction. [`model::rank`] (the live ranking) then
//! suggests `k` courses from the rest, and so does the baseline (the `k` courses with the
//! most learners that the learner does not have). A hit is the held-out course among them.

use std::collections::{HashMap, HashSet};

use duovarsity_common::db::Database;
use duovarsity_common::error::Error;
use sqlx::Row;

use crate::catalog::CourseEntry;
use crate::model::{self, Evidence, Learner, NEIGHBOURS, RECENT_COURSES};
use crate::store;

/// What an evaluation found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Learners with a held-out enrollment.
    pub learners: usize,
    pub k: usize,
    pub hits: usize,
    pub baseline_hits: usize,
}

impl Evaluation {
    pub fn hit_rate(&self) -> f64 {
        self.hits as f64 / self.learners.max(1) as f64
    }

    pub fn baseline_hit_rate(&self) -> f64 {
        self.baseline_hits as f64 / self.learners.max(1) as f64
    }
}

/// One learner's enrollment, as evaluation reads it.
struct Enrolled {
    course: String,
    status: String,
    enrolled_at: i64,
}

/// Runs the evaluation over the discovery database.
pub async fn evaluate(db: &Database, k: usize) -> Result<Evaluation, Error> {
    let catalog: HashMap<String, CourseEntry> = store::all_courses(db)
        .await?
        .into_iter()
        .map(|c| (c.entry.id.clone(), c.entry))
        .collect();
    let mut by_learner: HashMap<String, Vec<Enrolled>> = HashMap::new();
    for row in
        sqlx::query("SELECT learner_id, course_id, status, enrolled_at FROM discovery_enrollments")
            .fetch_all(db.reader())
            .await?
    {
        by_learner
            .entry(row.try_get("learner_id")?)
            .or_default()
            .push(Enrolled {
                course: row.try_get("course_id")?,
                status: row.try_get("status")?,
                enrolled_at: row.try_get("enrolled_at")?,
            });
    }
    let mut pairs: HashMap<String, HashMap<String, i64>> = HashMap::new();
    for row in sqlx::query("SELECT course_id, other_id, learners FROM discovery_course_pairs")
        .fetch_all(db.reader())
        .await?
    {
        pairs
            .entry(row.try_get("course_id")?)
            .or_default()
            .insert(row.try_get("other_id")?, row.try_get("learners")?);
    }
    let learners: HashMap<String, i64> = store::most_learners(db, i64::MAX)
        .await?
        .into_iter()
        .collect();
    let mut required: HashMap<String, Vec<String>> = HashMap::new();
    for row in sqlx::query("SELECT course_id, prerequisite_id FROM discovery_prerequisites")
        .fetch_all(db.reader())
        .await?
    {
        required
            .entry(row.try_get("course_id")?)
            .or_default()
            .push(row.try_get("prerequisite_id")?);
    }

    let mut result = Evaluation {
        learners: 0,
        k,
        hits: 0,
        baseline_hits: 0,
    };
    for rows in by_learner.values_mut() {
        rows.sort_by_key(|r| r.enrolled_at);
        let holding: Vec<&Enrolled> = rows
            .iter()
            .filter(|r| store::HOLDING.contains(&r.status.as_str()))
            .collect();
        let Some((held_out, rest)) = holding.split_last() else {
            continue;
        };
        if rest.is_empty() {
            continue;
        }
        let held = held_out.course.as_str();
        result.learners += 1;

        // The model without the held-out enrollment.
        let count = |id: &str| learners.get(id).copied().unwrap_or(0) - i64::from(id == held);
        let recent: Vec<String> = rest.iter().rev().map(|r| r.course.clone()).collect();
        let mut evidence = Evidence::default();
        for taken in recent.iter().take(RECENT_COURSES) {
            let mut neighbours: Vec<(String, i64)> = pairs
                .get(taken)
                .map(|p| {
                    p.iter()
                        .map(|(other, n)| (other.clone(), n - i64::from(other == held)))
                        .collect()
                })
                .unwrap_or_default();
            neighbours.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            neighbours.truncate(usize::try_from(NEIGHBOURS).unwrap_or(usize::MAX));
            evidence.taken_with.insert(taken.clone(), neighbours);
        }
        let mut popular: Vec<(String, i64)> =
            learners.keys().map(|id| (id.clone(), count(id))).collect();
        popular.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        popular.truncate(usize::try_from(NEIGHBOURS).unwrap_or(usize::MAX));
        let completed: HashSet<&str> = rest
            .iter()
            .filter(|r| r.status == "completed")
            .map(|r| r.course.as_str())
            .collect();
        evidence.ready = required
            .iter()
            .filter(|(_, needs)| {
                needs.iter().any(|n| completed.contains(n.as_str()))
                    && needs.iter().all(|n| completed.contains(n.as_str()))
            })
            .map(|(course, _)| course.clone())
            .collect();
        evidence.learners = learners.keys().map(|id| (id.clone(), count(id))).collect();
        evidence.popular = popular;
        let learner = Learner {
            level: recent
                .first()
                .and_then(|id| catalog.get(id))
                .map_or_else(|| "beginner".into(), |c| c.level.clone()),
            has: rows
                .iter()
                .filter(|r| r.status != "revoked" && r.course != held)
                .map(|r| r.course.clone())
                .collect(),
            holds: recent,
        };
        if model::rank(&learner, &evidence, &catalog, k)
            .iter()
            .any(|(id, _, _)| id == held)
        {
            result.hits += 1;
        }
        let baseline = evidence
            .popular
            .iter()
            .filter(|(id, _)| {
                !learner.has.contains(id) && catalog.get(id).is_some_and(CourseEntry::is_listed)
            })
            .take(k);
        if baseline.into_iter().any(|(id, _)| id == held) {
            result.baseline_hits += 1;
        }
    }
    Ok(result)
}
