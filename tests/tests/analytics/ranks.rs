//! Leaderboards against the truth: after a random sequence of completions (with repeats and
//! replays), every board a learner reads equals a brute-force ranking of the database's
//! weekly XP, whether it is served from Redis, from the database while Redis is down, or
//! from Redis again after the sets were lost and rebuilt.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use duovarsity::Component;
use duovarsity_common::events::pending_event;
use duovarsity_proto::events::{EnrollmentCompleted, EnrollmentCreated, LessonCompleted};
use duovarsity_testkit::{PrivateRedis, TempPostgres, TestPlatform};
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row as _;

use crate::learner;

/// A small deterministic generator (xorshift), so a failing sequence can be rerun.
struct Random(u64);

impl Random {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// (rank, display name, xp) of every visible learner of `scope`, brute force: the whole
/// table read and sorted by XP, then learner id, both descending.
async fn truth(pool: &sqlx::PgPool, scope: &str) -> Vec<(i64, String, i64)> {
    let rows = sqlx::query(
        "SELECT w.learner_id, w.xp, l.display_name, l.leaderboard_hidden FROM analytics_weekly_xp w \
         JOIN analytics_learners l ON l.learner_id = w.learner_id WHERE w.scope = $1",
    )
    .bind(scope)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut visible: Vec<(i64, String, String)> = rows
        .iter()
        .filter(|r| r.get::<i64, _>("leaderboard_hidden") == 0)
        .map(|r| (r.get("xp"), r.get("learner_id"), r.get("display_name")))
        .collect();
    visible.sort_by(|a, b| b.cmp(a));
    visible
        .into_iter()
        .zip(1..)
        .map(|((xp, _, name), rank)| (rank, name, xp))
        .collect()
}

fn board_of(board: &Value) -> Vec<(i64, String, i64)> {
    board["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["rank"].as_str().unwrap().parse().unwrap(),
                e["displayName"].as_str().unwrap().to_string(),
                e["xp"].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

async fn redis_reads(p: &TestPlatform) -> u64 {
    p.metrics()
        .await
        .lines()
        .find(|l| l.starts_with("leaderboard_reads_total{") && l.contains("source=\"redis\""))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// Every learner reads every board they may, and each equals the truth (their own place
/// included).
async fn boards_agree(
    p: &TestPlatform,
    pool: &sqlx::PgPool,
    learners: &[(String, String)],
    courses: &[String],
) {
    for scope in std::iter::once("global".to_string()).chain(courses.iter().cloned()) {
        let expected = truth(pool, &scope).await;
        let path = if scope == "global" {
            "/v1/leaderboards/global?limit=100".to_string()
        } else {
            format!("/v1/courses/{scope}/leaderboard?limit=100")
        };
        for (name, token) in learners {
            let (status, board) = p.call(Method::GET, &path, Some(token), None).await;
            if status == reqwest::StatusCode::FORBIDDEN {
                continue; // not enrolled in this course
            }
            assert_eq!(board_of(&board), expected, "{scope} as {name}");
            assert_eq!(board["learners"], expected.len().to_string());
            if let Some(place) = expected.iter().find(|(_, n, _)| n == name) {
                assert_eq!(
                    board["me"]["rank"],
                    place.0.to_string(),
                    "{scope} as {name}: {board}"
                );
                let neighbours: Vec<(i64, String, i64)> = expected
                    .iter()
                    .filter(|(rank, _, _)| (rank - place.0).abs() <= 2)
                    .cloned()
                    .collect();
                assert_eq!(
                    board_of(&json!({"entries": board["neighbours"]})),
                    neighbours,
                    "{scope} as {name}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranks_equal_a_brute_force_ranking_from_redis_without_it_and_after_a_rebuild() {
    let database = TempPostgres::create().await;
    let mut redis = PrivateRedis::start();
    let redis_url = redis.url();
    let settings = [
        ("DUOVARSITY_DATABASE_URL", database.url.as_str()),
        ("DUOVARSITY_REDIS_URL", redis_url.as_str()),
    ];
    let p = TestPlatform::start_with_admin(Component::All, &settings).await;
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();

    let mut learners = Vec::new();
    for n in 0..12 {
        let name = format!("Learner {n:02}");
        let (id, token) = learner(&p, &name).await;
        learners.push((name, id, token));
    }
    let courses: Vec<String> = (0..3).map(|_| uuid::Uuid::now_v7().to_string()).collect();
    let lessons: Vec<String> = (0..8).map(|_| uuid::Uuid::now_v7().to_string()).collect();

    // A random sequence: completions of random lessons (repeats included), a few course
    // completions (one of them twice), each event also published a second time (a replay).
    let mut random = Random(0x5eed_1234_abcd_ef01);
    let mut events = Vec::new();
    let mut enrolled = BTreeSet::new();
    let mut earned = BTreeSet::new();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for _ in 0..150 {
        let (_, id, _) = &learners[random.below(learners.len())];
        let course = &courses[random.below(courses.len())];
        let lesson = format!("{}-{}", lessons[random.below(lessons.len())], &course[..8]);
        if enrolled.insert((id.clone(), course.clone())) {
            events.push(pending_event(
                id,
                &EnrollmentCreated {
                    enrollment_id: uuid::Uuid::now_v7().to_string(),
                    course_id: course.clone(),
                    learner_id: id.clone(),
                    status: "active".into(),
                },
            ));
        }
        if earned.insert((id.clone(), lesson.clone())) {
            *expected.entry(id.clone()).or_default() += 10;
        }
        events.push(pending_event(
            id,
            &LessonCompleted {
                learner_id: id.clone(),
                course_id: course.clone(),
                lesson_id: lesson,
                lesson_title: "A lesson".into(),
            },
        ));
        if random.below(20) == 0 {
            if earned.insert((id.clone(), course.clone())) {
                *expected.entry(id.clone()).or_default() += 50;
            }
            for _ in 0..2 {
                events.push(pending_event(
                    id,
                    &EnrollmentCompleted {
                        enrollment_id: uuid::Uuid::now_v7().to_string(),
                        course_id: course.clone(),
                        learner_id: id.clone(),
                        certificate_number: "DV-TEST".into(),
                    },
                ));
            }
        }
    }
    let bus = p.bus();
    for event in &events {
        bus.publish(event.record.clone()).await.unwrap();
        if random.below(4) == 0 {
            bus.publish(event.record.clone()).await.unwrap();
        }
    }
    // Three learners hide themselves.
    for (_, _, token) in &learners[..3] {
        let (status, _) = p
            .call(
                Method::PATCH,
                "/v1/me/analytics-preferences",
                Some(token),
                Some(json!({"leaderboardHidden": true})),
            )
            .await;
        assert!(status.is_success());
    }
    // Applied: the database holds every event (the processed table counts them once).
    let deadline = Instant::now() + Duration::from_secs(30);
    let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    loop {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM analytics_processed_events WHERE event_id = ANY($1)",
        )
        .bind(&ids)
        .fetch_one(&pool)
        .await
        .unwrap();
        if row.get::<i64, _>("n") == ids.len() as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "the consumer did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The truth itself is right: 10 XP per distinct (learner, lesson), 50 per completed course.
    let rows = sqlx::query("SELECT learner_id, xp FROM analytics_weekly_xp WHERE scope = 'global'")
        .fetch_all(&pool)
        .await
        .unwrap();
    let stored: BTreeMap<String, i64> = rows
        .iter()
        .map(|r| (r.get("learner_id"), r.get("xp")))
        .collect();
    assert_eq!(stored, expected);

    let readers: Vec<(String, String)> = learners
        .iter()
        .map(|(n, _, t)| (n.clone(), t.clone()))
        .collect();
    // From Redis.
    let before = redis_reads(&p).await;
    boards_agree(&p, &pool, &readers, &courses).await;
    assert!(redis_reads(&p).await > before, "served from Redis");

    // Redis down: the database answers, the same.
    redis.stop();
    boards_agree(&p, &pool, &readers, &courses).await;

    // Back, empty: the service finds its sets missing and rebuilds them.
    redis.restart();
    let raw = redis::Client::open(redis_url.as_str()).unwrap();
    let mut direct = raw.get_multiplexed_async_connection().await.unwrap();
    let week: String = sqlx::query("SELECT week FROM analytics_weekly_xp LIMIT 1")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get("week");
    let key = format!("duovarsity:leaderboard:{week}:global");
    let visible = truth(&pool, "global").await.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let size: usize = redis::cmd("ZCARD")
            .arg(&key)
            .query_async(&mut direct)
            .await
            .unwrap();
        if size == visible {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sets were not rebuilt ({size} of {visible})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = redis_reads(&p).await;
    boards_agree(&p, &pool, &readers, &courses).await;
    assert!(redis_reads(&p).await > before, "served from Redis again");

    // The operator's command rebuilds a set that was lost.
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut direct)
        .await
        .unwrap();
    let env = std::collections::BTreeMap::from([
        ("DUOVARSITY_DATABASE_URL".to_string(), database.url.clone()),
        ("DUOVARSITY_REDIS_URL".to_string(), redis_url.clone()),
        (
            "DUOVARSITY_DATA_DIR".to_string(),
            p.data_dir().display().to_string(),
        ),
    ]);
    let config = duovarsity_config::Config::from_sources(None, &env).unwrap();
    let members = duovarsity::rebuild_leaderboards(&config).await.unwrap();
    assert!(members >= visible, "{members} members rebuilt");
    let size: usize = redis::cmd("ZCARD")
        .arg(&key)
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(size, visible);
    boards_agree(&p, &pool, &readers, &courses).await;

    p.stop().await;
    pool.close().await;
    database.drop_database().await;
}
