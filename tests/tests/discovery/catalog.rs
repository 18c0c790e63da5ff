//! The index follows the catalog: edits, a price change (a lesson's text leaves anonymous
//! search when its course becomes paid), a deleted lesson and an archived course, each
//! within moments; `duovarsity discovery reindex` repairs rows that went wrong; a second
//! replica built from the same database answers the same.

use std::collections::BTreeMap;
use std::time::Duration;

use duovarsity::Component;
use duovarsity_common::events::pending_event_at;
use duovarsity_common::time::now_millis;
use duovarsity_config::Config;
use duovarsity_discovery::DiscoveryModule;
use duovarsity_discovery::follow::POLL as follow_poll_interval;
use duovarsity_module::{ServiceContext, ServiceModule};
use duovarsity_proto::discovery::SearchRequest;
use duovarsity_proto::events::CourseUpdated;
use duovarsity_testkit::{TEST_ADMIN, TempPostgres, TestPlatform};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::{Spec, course, ok, search, titles, total, until};

fn names(found: &serde_json::Value) -> Vec<String> {
    titles(found).into_iter().map(|(_, t)| t).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_the_catalog_and_reindex_repairs_it_on_sqlite() {
    follows_the_catalog(&[]).await;
}

/// The same on PostgreSQL: the same answers in the distributed mode's database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_follows_the_catalog_and_reindex_repairs_it_on_postgres() {
    let database = TempPostgres::create().await;
    follows_the_catalog(&[("DUOVARSITY_DATABASE_URL", database.url.as_str())]).await;
    database.drop_database().await;
}

async fn follows_the_catalog(settings: &[(&str, &str)]) {
    let p = TestPlatform::start_with_admin(Component::All, settings).await;
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (course_id, lessons) = course(
        &p,
        &admin,
        &Spec {
            slug: "orbits",
            title: "Orbital Mechanics",
            summary: "How things fall around other things.",
            level: "LEVEL_INTERMEDIATE",
            language: "en",
            price: 0,
            lessons: &[
                (
                    "Kepler's laws",
                    "Every planet passes its perihelion once a year.",
                ),
                ("Transfer orbits", "A Hohmann transfer uses two burns."),
            ],
        },
    )
    .await;
    let (_, took) = until(&p, None, &[("q", "perihelion")], |f| total(f) == 1).await;
    println!("published course searchable after {took:?}");

    // An edit: the new title is found, the old one no longer.
    let rename = json!({"title": "Celestial Mechanics"});
    ok(
        &p,
        &admin,
        Method::PATCH,
        &format!("/v1/courses/{course_id}"),
        rename,
    )
    .await;
    let (_, took) = until(&p, None, &[("q", "celestial ")], |f| total(f) == 1).await;
    println!("edit searchable after {took:?}");

    assert_eq!(total(&search(&p, None, &[("q", "orbital ")]).await.1), 0);

    // A price: the lessons' text is now for buyers only.
    let price = json!({"price": {"currency": "USD", "amountMinor": 1500}});
    ok(
        &p,
        &admin,
        Method::PATCH,
        &format!("/v1/courses/{course_id}"),
        price,
    )
    .await;
    until(&p, None, &[("q", "perihelion")], |f| total(f) == 0).await;
    until(&p, Some(&admin), &[("q", "perihelion")], |f| total(f) == 1).await;
    let (_, by_title) = search(&p, None, &[("q", "kepler")]).await;
    assert_eq!(by_title["hits"][0]["snippet"], "", "{by_title}");

    // A deleted lesson leaves; the other stays.
    let (status, _) = p
        .call(
            Method::DELETE,
            &format!("/v1/lessons/{}", lessons[1]),
            Some(&admin),
            None,
        )
        .await;
    assert!(status.is_success());
    until(&p, None, &[("q", "hohmann")], |f| total(f) == 0).await;
    until(&p, None, &[("q", "kepler")], |f| total(f) == 1).await;

    // Reindex repairs rows the events never fixed: a course wrongly hidden comes back, a
    // course the owners do not list goes.
    let mut env = BTreeMap::from([
        (
            "DUOVARSITY_DATA_DIR".to_string(),
            p.data_dir().display().to_string(),
        ),
        (
            "DUOVARSITY_GRPC_ADDR".to_string(),
            p.grpc_addr().to_string(),
        ),
    ]);
    env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::from_sources(None, &env).unwrap();
    let discovery: DiscoveryModule = DiscoveryModule::open(&ServiceContext::new(config.clone()))
        .await
        .unwrap();
    let db = discovery.discovery().database().writer().inner().clone();
    // A replayed or late event (an older state, published again) changes nothing: once
    // the consumer has recorded it, the row and the index keep the newer title.
    let stale = pending_event_at(
        &course_id,
        &CourseUpdated {
            course_id: course_id.clone(),
            slug: "orbits".into(),
            title: "Orbital Mechanics".into(),
            level: "intermediate".into(),
            language: "en".into(),
            status: "published".into(),
            ..CourseUpdated::default()
        },
        now_millis() - 60_000,
    );
    let stale_id = stale.event_id.clone();
    p.bus().publish(stale.record).await.unwrap();
    let began = std::time::Instant::now();
    loop {
        let (seen,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM discovery_processed_events WHERE event_id = $1")
                .bind(&stale_id)
                .fetch_one(&db)
                .await
                .unwrap();
        if seen == 1 {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the replay is consumed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (title,): (String,) =
        sqlx::query_as("SELECT title FROM discovery_courses WHERE course_id = $1")
            .bind(&course_id)
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(title, "Celestial Mechanics");
    tokio::time::sleep(follow_poll_interval * 2).await;
    assert_eq!(total(&search(&p, None, &[("q", "orbital ")]).await.1), 0);

    sqlx::query("UPDATE discovery_courses SET status = 'archived', changed_at = $1")
        .bind(now_millis())
        .execute(&db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO discovery_courses (course_id, slug, title, summary, level, language, tags, \
         price_currency, price_minor, instructor_id, status, prerequisite_ids, event_at, \
         changed_at) VALUES ('0190f1c2-0000-7000-8000-000000000001', 'ghost', 'Ghost Course', \
         '', 'beginner', 'en', '', '', 0, '0190f1c2-0000-7000-8000-000000000002', 'published', \
         '', 0, $1)",
    )
    .bind(now_millis())
    .execute(&db)
    .await
    .unwrap();
    until(&p, None, &[("q", "")], |f| names(f) == ["Ghost Course"]).await;
    let report = duovarsity::discovery::reindex(&config).await.unwrap();
    assert_eq!(
        (
            report.written.courses,
            report.written.lessons,
            report.written.unlisted
        ),
        (1, 1, 1),
        "{report:?}"
    );
    let (repaired, took) = until(&p, None, &[("q", "")], |f| total(f) == 2).await;
    println!("reindex searchable after {took:?}");
    let mut found = names(&repaired);
    found.sort();
    assert_eq!(found, ["Celestial Mechanics", "Kepler's laws"]);

    // A second replica built from the same database answers alike.
    let module = discovery;
    let follower = module.follower();
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(follower.run(stop.clone()));
    let replica = module.discovery();
    let asked = SearchRequest {
        q: "kepl".into(),
        ..SearchRequest::default()
    };
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(answer) = replica.search(None, asked.clone()).await {
            answered = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let replica_answer = answered.expect("the second replica builds its index");
    let (_, platform_answer) = search(&p, None, &[("q", "kepl")]).await;
    assert_eq!(replica_answer.hits.len(), 1);
    assert_eq!(
        replica_answer.hits[0].lesson_id,
        platform_answer["hits"][0]["lessonId"].as_str().unwrap()
    );
    assert_eq!(replica_answer.total, 1);
    stop.cancel();
    running.await.unwrap();
    ServiceModule::close(&module).await;

    // Archiving takes the course and its lessons out.
    ok(
        &p,
        &admin,
        Method::POST,
        &format!("/v1/courses/{course_id}:archive"),
        json!({}),
    )
    .await;
    let (_, took) = until(&p, None, &[("q", "")], |f| total(f) == 0).await;
    println!("archive hidden after {took:?}");
    let (status, _) = search(&p, Some(&admin), &[("q", "kepler")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        total(&search(&p, Some(&admin), &[("q", "kepler")]).await.1),
        0
    );
    p.stop().await;
}
