//! The ranking of new courses for a learner, from what they hold and what others took
//! together. Pure: the live recommender feeds it from the database, and `discovery
//! evaluate` from the same tables with each learner's last enrollment held out, so the
//! figures it prints are the recommender's own.
//!
//! Order: up to [`READY_FIRST`] courses whose prerequisites the learner completed (most
//! learners first), then courses taken together with theirs, scored by the cosine of
//! co-enrollment, `together / sqrt(learners(a) * learners(b))`, summed over the learner's
//! courses (so a course everyone takes does not swamp the rest; pairs of fewer than
//! [`MIN_TOGETHER`] learners are not used), then the most popular courses at the learner's
//! level, then the most popular of any level.

use std::collections::{HashMap, HashSet};

use crate::catalog::CourseEntry;

/// "Ready for" courses placed before the rest.
pub const READY_FIRST: usize = 3;
/// The learner's most recent courses whose neighbours are asked.
pub const RECENT_COURSES: usize = 10;
/// Neighbours read per course.
pub const NEIGHBOURS: i64 = 200;
/// Learners who must have taken two courses together before one is suggested for the
/// other: below it a pair could reveal one person's enrollments (the only learner of a
/// course, say) to anyone reading a course page's related courses.
pub const MIN_TOGETHER: i64 = 3;

/// Why a course is suggested.
#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    ReadyFor,
    /// Taken together with this course of the learner's.
    BecauseYouTook(String),
    PopularAtLevel(String),
}

/// What the ranking knows of one learner.
#[derive(Debug, Default)]
pub struct Learner {
    /// Courses held (active or completed), most recent first.
    pub holds: Vec<String>,
    /// Every course the learner has in any state but revoked: never suggested.
    pub has: HashSet<String>,
    /// The level suggestions default to ("beginner" without history).
    pub level: String,
}

/// What the ranking knows of the courses.
#[derive(Debug, Default)]
pub struct Evidence {
    /// For each of the learner's recent courses, courses taken with it and how many
    /// learners took both.
    pub taken_with: HashMap<String, Vec<(String, i64)>>,
    /// Learners per course.
    pub learners: HashMap<String, i64>,
    /// Courses whose prerequisites the learner completed.
    pub ready: Vec<String>,
    /// The most popular courses, most learners first.
    pub popular: Vec<(String, i64)>,
}

/// Up to `limit` courses for `learner`, best first, with why and a score.
pub fn rank(
    learner: &Learner,
    evidence: &Evidence,
    catalog: &HashMap<String, CourseEntry>,
    limit: usize,
) -> Vec<(String, Why, f64)> {
    let mut out: Vec<(String, Why, f64)> = Vec::new();
    let mut chosen: HashSet<String> = HashSet::new();
    let eligible = |id: &str, chosen: &HashSet<String>| {
        !learner.has.contains(id)
            && !chosen.contains(id)
            && catalog.get(id).is_some_and(CourseEntry::is_listed)
    };
    let learners = |id: &str| evidence.learners.get(id).copied().unwrap_or(0);

    let mut ready: Vec<&String> = evidence.ready.iter().collect();
    ready.sort_by_key(|id| (std::cmp::Reverse(learners(id)), (*id).clone()));
    for id in ready {
        if out.len() >= READY_FIRST.min(limit) {
            break;
        }
        if eligible(id, &chosen) {
            chosen.insert(id.clone());
            out.push((id.clone(), Why::ReadyFor, learners(id) as f64));
        }
    }

    // Cosine of co-enrollment, summed; the strongest of the learner's courses is the reason.
    let mut scores: HashMap<&str, (f64, &str, f64)> = HashMap::new();
    for taken in learner.holds.iter().take(RECENT_COURSES) {
        let Some(neighbours) = evidence.taken_with.get(taken) else {
            continue;
        };
        let n_taken = learners(taken).max(1) as f64;
        for (other, together) in neighbours {
            if *together < MIN_TOGETHER {
                continue;
            }
            let n_other = learners(other).max(1) as f64;
            let similarity = *together as f64 / (n_taken * n_other).sqrt();
            let entry = scores
                .entry(other.as_str())
                .or_insert((0.0, taken.as_str(), 0.0));
            entry.0 += similarity;
            if similarity > entry.2 {
                entry.1 = taken.as_str();
                entry.2 = similarity;
            }
        }
    }
    let mut similar: Vec<(&str, (f64, &str, f64))> = scores.into_iter().collect();
    similar.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then_with(|| a.0.cmp(b.0)));
    for (id, (score, because, _)) in similar {
        if out.len() >= limit {
            return out;
        }
        if eligible(id, &chosen) {
            chosen.insert(id.to_string());
            out.push((
                id.to_string(),
                Why::BecauseYouTook(because.to_string()),
                score,
            ));
        }
    }

    for at_level in [true, false] {
        for (id, count) in &evidence.popular {
            if out.len() >= limit {
                return out;
            }
            let level = catalog
                .get(id)
                .map(|c| c.level.as_str())
                .unwrap_or_default();
            if (!at_level || level == learner.level) && eligible(id, &chosen) {
                chosen.insert(id.clone());
                out.push((
                    id.clone(),
                    Why::PopularAtLevel(level.to_string()),
                    *count as f64,
                ));
            }
        }
    }
    out
}

/// Courses taken together with `course_id`, best first: the cosine of co-enrollment.
pub fn related(
    course_id: &str,
    neighbours: &[(String, i64)],
    learners: &HashMap<String, i64>,
    catalog: &HashMap<String, CourseEntry>,
    limit: usize,
) -> Vec<(String, f64)> {
    let n = learners.get(course_id).copied().unwrap_or(0).max(1) as f64;
    let mut scored: Vec<(String, f64)> = neighbours
        .iter()
        .filter(|(other, together)| {
            *together >= MIN_TOGETHER
                && other != course_id
                && catalog.get(other).is_some_and(CourseEntry::is_listed)
        })
        .map(|(other, together)| {
            let m = learners.get(other).copied().unwrap_or(0).max(1) as f64;
            (other.clone(), *together as f64 / (n * m).sqrt())
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    scored.truncate(limit);
    scored
}
