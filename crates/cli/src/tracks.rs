//! `duovarsity seed --learners N`, when the demo catalog is there: enrollments with a
//! planted structure, for `duovarsity discovery evaluate`. Each load-test learner follows one
//! learning track (tracks differ in popularity), enrolling in its courses in order and
//! completing all but the last, and one learner in five also takes one course at random
//! (noise). Deterministic: learner `i` always makes the same choices.

use duovarsity_config::Config;
use duovarsity_course::CourseModule;
use duovarsity_module::ServiceModule as _;
use duovarsity_user::UserModule;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::open_alone;
use crate::seed::learner_email;

/// (weight, course slugs in the order learners take them).
const TRACKS: [(u32, &[&str]); 6] = [
    (
        30,
        &[
            "rust-fundamentals",
            "ownership-in-depth",
            "async-rust",
            "rust-web-services",
        ],
    ),
    (
        25,
        &[
            "python-for-data",
            "statistics-essentials",
            "machine-learning-intro",
            "llm-applications",
        ],
    ),
    (
        20,
        &[
            "linux-command-line",
            "git-for-teams",
            "kubernetes-essentials",
            "observability",
        ],
    ),
    (12, &["sql-basics", "data-modeling", "postgres-performance"]),
    (
        8,
        &[
            "networking-for-developers",
            "distributed-systems-101",
            "event-driven-architecture",
        ],
    ),
    (
        5,
        &["python-for-data", "data-visualization", "technical-writing"],
    ),
];
/// Every slug a learner may take at random.
const NOISE: [&str; 6] = [
    "git-for-teams",
    "technical-writing",
    "sql-basics",
    "observability",
    "networking-for-developers",
    "statistics-essentials",
];

/// What seeding tracks did.
#[derive(Debug, Clone, Copy, Default)]
pub struct TrackReport {
    pub learners: usize,
    pub enrollments: usize,
}

/// The courses learner `i` takes, in order, and whether each is completed.
pub fn plan(i: usize) -> Vec<(&'static str, bool)> {
    let mut rng = StdRng::seed_from_u64(i as u64);
    let total: u32 = TRACKS.iter().map(|t| t.0).sum();
    let mut pick = rng.gen_range(0..total);
    let track = TRACKS
        .iter()
        .find(|(weight, _)| {
            let here = pick < *weight;
            pick = pick.saturating_sub(*weight);
            here
        })
        .map_or(TRACKS[0].1, |t| t.1);
    let taken = rng.gen_range(2..=track.len());
    let mut plan: Vec<(&str, bool)> = track[..taken]
        .iter()
        .enumerate()
        .map(|(n, slug)| (*slug, n + 1 < taken))
        .collect();
    if rng.gen_range(0..5) == 0 {
        let extra = NOISE[rng.gen_range(0..NOISE.len())];
        if plan.iter().all(|(slug, _)| *slug != extra) {
            let at = rng.gen_range(0..=plan.len());
            plan.insert(at, (extra, false));
        }
    }
    plan
}

/// Enrolls the load-test learners 0..count along their tracks (existing enrollments are
/// kept); None when the demo catalog is not there.
pub async fn seed(config: &Config, count: usize) -> anyhow::Result<Option<TrackReport>> {
    let users: UserModule = open_alone(config).await?;
    let courses: CourseModule = open_alone(config).await?;
    let result = enroll(&users, &courses, count).await;
    users.close().await;
    courses.close().await;
    result
}

async fn enroll(
    users: &UserModule,
    courses: &CourseModule,
    count: usize,
) -> anyhow::Result<Option<TrackReport>> {
    let mut ids = std::collections::HashMap::new();
    for (_, track) in TRACKS {
        for slug in track.iter().chain(NOISE.iter()) {
            if ids.contains_key(slug) {
                continue;
            }
            match courses.courses().course_by_id(slug).await {
                Ok(course) => ids.insert(*slug, course.id),
                Err(duovarsity_common::Error::NotFound { .. }) => return Ok(None),
                Err(error) => anyhow::bail!("reading course {slug}: {error}"),
            };
        }
    }
    // A day ago, a minute apart per course, a millisecond apart per learner: each
    // learner's enrollments have a clear order.
    let start = duovarsity_common::time::now_millis() - 86_400_000;
    let mut report = TrackReport::default();
    for i in 0..count {
        let email = learner_email(i);
        let learner = users
            .users()
            .id_of(&email)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .ok_or_else(|| anyhow::anyhow!("{email} is missing"))?;
        for (step, (slug, completed)) in plan(i).into_iter().enumerate() {
            let at = start + step as i64 * 120_000 + i as i64;
            if courses
                .courses()
                .seed_enrollment(&learner, &ids[slug], completed, at)
                .await
                .map_err(|e| anyhow::anyhow!("enrolling {email} in {slug}: {e}"))?
            {
                report.enrollments += 1;
            }
        }
        report.learners += 1;
    }
    Ok(Some(report))
}
