//! The real event path in distributed mode: the course service's outbox, a Kafka-protocol
//! broker, the analytics consumer on PostgreSQL, and the leaderboard set in Redis.

use duovarsity::Component;
use duovarsity_testkit::{TEST_ADMIN, TempPostgres, TestPlatform, kafka_brokers, redis_url};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{complete, course_with_lessons, learner, until, xp_becomes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lesson_completed_reaches_xp_and_rank_through_kafka() {
    // Once, on a busy machine, this run did not end for minutes (see the note of issue
    // 24): bounded, so that a repeat fails with a message instead of holding CI.
    tokio::time::timeout(std::time::Duration::from_secs(180), through_kafka())
        .await
        .expect("the Kafka run ends within 3 minutes (it takes about 10 s)");
}

async fn through_kafka() {
    let database = TempPostgres::create().await;
    let redis = redis_url();
    let brokers = kafka_brokers();
    // Topics and groups of this run only: runs share the broker.
    let prefix = format!("run{}.", uuid::Uuid::now_v7().simple());
    let p = TestPlatform::start_with_admin(
        Component::All,
        &[
            ("DUOVARSITY_DATABASE_URL", database.url.as_str()),
            ("DUOVARSITY_REDIS_URL", redis.as_str()),
            ("DUOVARSITY_KAFKA_BROKERS", brokers.as_str()),
            ("DUOVARSITY_KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ],
    )
    .await;
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (course, lessons) = course_with_lessons(&p, &admin, "on-kafka", 2).await;
    let (_, token) = learner(&p, "Kafka Learner").await;
    let (status, _) = p
        .call(
            Method::PATCH,
            "/v1/users/me",
            Some(&token),
            Some(json!({"timeZone": "America/New_York"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // user.v1 and progress.v1 are consumed apart, in no order between them: the time zone
    // is applied before the lessons are completed, so the XP lands on the learner's day.
    // (Once, under a full test run, the lessons were applied first.)
    until(&p, &token, "/v1/me/activity", |a| {
        a["timeZone"] == "America/New_York"
    })
    .await;
    p.enroll(&token, &course).await;
    complete(&p, &token, &lessons[0]).await;
    let activity = xp_becomes(&p, &token, 10).await;
    assert_eq!(activity["streak"]["current"], 1, "{activity}");
    complete(&p, &token, &lessons[1]).await;
    // Two lessons and the course bonus.
    let activity = xp_becomes(&p, &token, 70).await;
    assert_eq!(activity["timeZone"], "America/New_York", "{activity}");

    let board = until(
        &p,
        &token,
        &format!("/v1/courses/{course}/leaderboard"),
        |b| b["me"]["xp"] == "70",
    )
    .await;
    assert_eq!(board["me"]["rank"], "1", "{board}");
    assert_eq!(board["entries"][0]["displayName"], "Kafka Learner");
    let dashboard = until(
        &p,
        &admin,
        &format!("/v1/courses/{course}/analytics"),
        |d| d["completionsMeasured"] == "1",
    )
    .await;
    assert_eq!(
        dashboard["lessons"].as_array().unwrap().len(),
        2,
        "{dashboard}"
    );
    p.stop().await;
    database.drop_database().await;
}
