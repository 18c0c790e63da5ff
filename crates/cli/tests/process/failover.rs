//! A replica killed with SIGKILL under read load: two course services on PostgreSQL
//! behind one gateway. Idempotent reads that hit the dead replica are retried on the
//! other and the dead endpoint is ejected, so no read fails; writes that fail say so
//! (503 with Retry-After), never silently.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use duovarsity_testkit::{Api, TEST_ADMIN, TEST_PASSWORD, TempPostgres};
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{duovarsity, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_a_replica_killed_under_load_and_writes_say_when_they_fail() {
    let database = TempPostgres::create().await;
    let data = tempfile::tempdir().unwrap();
    let migrated = duovarsity()
        .env("DUOVARSITY_DATABASE_URL", &database.url)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    let shared = vec![
        ("DUOVARSITY_DATABASE_URL", database.url.clone()),
        ("DUOVARSITY_MIGRATE_ON_START", "false".to_string()),
    ];
    let mut user_env = shared.clone();
    user_env.push(("DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL", TEST_ADMIN.to_string()));
    user_env.push((
        "DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD",
        TEST_PASSWORD.to_string(),
    ));
    let user = serve("user", "user", data.path(), &user_env);
    let mut course_env = shared.clone();
    course_env.push(("DUOVARSITY_USER_SERVICE_URL", user.grpc.clone().unwrap()));
    let mut doomed = serve("course-a", "course", data.path(), &course_env);
    let survivor = serve("course-b", "course", data.path(), &course_env);
    let both = format!(
        "{},{}",
        doomed.grpc.clone().unwrap(),
        survivor.grpc.clone().unwrap()
    );
    let gateway = serve(
        "gateway",
        "gateway",
        data.path(),
        &[
            ("DUOVARSITY_USER_SERVICE_URL", user.grpc.clone().unwrap()),
            ("DUOVARSITY_COURSE_SERVICE_URL", both),
            ("DUOVARSITY_RATE_LIMITS_ENABLED", "false".to_string()),
            // Every read must reach a replica: the edge cache would answer the public
            // page itself.
            ("DUOVARSITY_EDGE_CACHE_BYTES", "0".to_string()),
        ],
    );
    let api = Arc::new(
        Api::new(&gateway.http.clone().unwrap()).with_admin(&gateway.admin.clone().unwrap()),
    );
    let (_, admin) = api.sign_in(TEST_ADMIN).await;
    let (course_id, _) = api.course_with_lesson(&admin, "failover").await;
    api.publish(&admin, &course_id).await;

    // Four readers for four seconds; the doomed replica is killed after one.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (api, stop) = (api.clone(), stop.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = api
                        .call(Method::GET, "/v1/courses/failover", None, None)
                        .await;
                    outcomes.push((started.elapsed(), status, body));
                }
                outcomes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = started.elapsed();
    doomed.child.kill().unwrap(); // SIGKILL
    doomed.child.wait().unwrap();

    // Writes meanwhile: each succeeds, or fails with 503 and retry advice.
    let mut writes = Vec::new();
    for n in 0..10 {
        let body = json!({"slug": format!("after-{n}"), "title": "After", "level": "LEVEL_BEGINNER", "language": "en"});
        let response = api
            .client
            .post(api.url("/v1/courses"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let retry_after = response.headers().contains_key("retry-after");
        writes.push((response.status(), retry_after));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut reads = Vec::new();
    for reader in readers {
        reads.extend(reader.await.unwrap());
    }

    let failed: Vec<_> = reads
        .iter()
        .filter(|(_, status, _)| *status != StatusCode::OK)
        .map(|(at, status, body)| format!("{at:?} {status} {body}"))
        .collect();
    let after_kill = reads.iter().filter(|(at, _, _)| *at > killed_at).count();
    assert!(after_kill > 20, "only {after_kill} reads after the kill");
    assert!(
        failed.is_empty(),
        "{} of {} reads failed (killed at {killed_at:?}): {failed:#?}",
        failed.len(),
        reads.len()
    );
    for (status, retry_after) in &writes {
        assert!(
            *status == StatusCode::OK
                || (*status == StatusCode::SERVICE_UNAVAILABLE && *retry_after),
            "a write answered {status} (retry-after: {retry_after}): {writes:?}"
        );
    }
    assert!(
        writes.iter().filter(|(s, _)| *s == StatusCode::OK).count() >= 7,
        "the dead endpoint is ejected after a few failures: {writes:?}"
    );
    // The gateway ejected the dead endpoint (and lists both in its status).
    let metrics = api.metrics().await;
    assert!(
        metrics.contains(
            "gateway_endpoint_ejections_total{service=\"duovarsity.course.v1.CourseService\"}"
        ),
        "no ejection counted"
    );
    let (_, status) = api.admin("/status").await;
    assert_eq!(
        status["endpoints"]["duovarsity.course.v1.CourseService"]
            .as_array()
            .map(Vec::len),
        Some(2),
        "{status}"
    );
    drop((gateway, survivor, user));
    database.drop_database().await;
}
