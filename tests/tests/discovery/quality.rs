//! Quality over the demo catalog (`duovarsity seed --demo`): queries as learners type
//! them, with typos and unfinished words, each with the course that must come first; and
//! `duovarsity discovery evaluate` over learners seeded along learning tracks
//! (`seed --learners N`), where the recommender must beat popularity by half again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use duovarsity::Component;
use duovarsity_config::Config;
use duovarsity_discovery::DiscoveryModule;
use duovarsity_module::{ServiceContext, ServiceModule};
use duovarsity_testkit::TestPlatform;

use crate::{search, titles, total, until};

/// (what was typed, the course that must be the first hit).
const QUERIES: [(&str, &str); 34] = [
    // Typos in finished words.
    ("rust fundamentls ", "Rust Fundamentals"),
    ("ownership borowing ", "Ownership and Borrowing in Depth"),
    ("web servces rust ", "Building Web Services in Rust"),
    ("sql basis ", "SQL Basics"),
    ("postgress performance ", "PostgreSQL Performance Tuning"),
    ("data modelling ", "Data Modeling for Applications"),
    ("distributed sytems ", "Distributed Systems 101"),
    (
        "event driven kafak ",
        "Event-Driven Architecture with Kafka",
    ),
    ("linux comand line ", "The Linux Command Line"),
    ("git teams ", "Git for Teams"),
    ("kubernets ", "Kubernetes Essentials"),
    ("observabilty ", "Observability: Logs, Metrics, Traces"),
    ("netwroking ", "Networking for Developers"),
    ("pyton data ", "Python for Data Analysis"),
    ("statistcs ", "Statistics Essentials"),
    ("machine lerning ", "Introduction to Machine Learning"),
    (
        "language modls ",
        "Building Applications with Language Models",
    ),
    ("visualisation ", "Data Visualization that Works"),
    ("technical writting ", "Technical Writing for Engineers"),
    ("ownrship ", "Ownership and Borrowing in Depth"),
    // Words still being typed (prefixes), some with a typo.
    ("kube", "Kubernetes Essentials"),
    ("obser", "Observability: Logs, Metrics, Traces"),
    ("statis", "Statistics Essentials"),
    ("postgr", "PostgreSQL Performance Tuning"),
    ("technic", "Technical Writing for Engineers"),
    ("visu", "Data Visualization that Works"),
    ("netw", "Networking for Developers"),
    ("ownersh", "Ownership and Borrowing in Depth"),
    ("distributed sys", "Distributed Systems 101"),
    ("event-dri", "Event-Driven Architecture with Kafka"),
    ("async rus", "Async Rust in Practice"),
    ("linux comm", "The Linux Command Line"),
    ("machne learn", "Introduction to Machine Learning"),
    ("kuberentes ess", "Kubernetes Essentials"),
];

/// Seeded learners (each follows a track; `duovarsity::tracks`).
const LEARNERS: usize = 400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_queries_find_the_expected_course_first_and_recommendations_beat_popularity() {
    let p = TestPlatform::start_with(Component::All, &[]).await;
    let config = Config::from_sources(
        None,
        &BTreeMap::from([(
            "DUOVARSITY_DATA_DIR".to_string(),
            p.data_dir().display().to_string(),
        )]),
    )
    .unwrap();
    let seeded = duovarsity::seed::demo(&config).await.unwrap();
    let documents = i64::try_from(seeded.courses + seeded.lessons).unwrap();
    until(&p, None, &[("q", "")], |f| total(f) == documents).await;
    let mut wrong = Vec::new();
    for (typed, expected) in QUERIES {
        let (_, found) = search(&p, None, &[("q", typed)]).await;
        let first = titles(&found).into_iter().next();
        if first != Some(("course".to_string(), expected.to_string())) {
            wrong.push(format!("{typed:?}: expected {expected:?}, got {first:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} queries wrong:\n{}",
        wrong.len(),
        QUERIES.len(),
        wrong.join("\n")
    );

    // Learners along tracks; once discovery has every enrollment, the evaluation.
    duovarsity::seed::learners(&config, LEARNERS).await.unwrap();
    let tracks = duovarsity::tracks::seed(&config, LEARNERS)
        .await
        .unwrap()
        .unwrap();
    let discovery: DiscoveryModule = DiscoveryModule::open(&ServiceContext::new(config.clone()))
        .await
        .unwrap();
    let began = Instant::now();
    loop {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM discovery_enrollments")
            .fetch_one(discovery.discovery().database().writer().inner())
            .await
            .unwrap();
        if count == i64::try_from(tracks.enrollments).unwrap() {
            break;
        }
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "{count} of {tracks:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ServiceModule::close(&discovery).await;
    let found = duovarsity::discovery::evaluate(&config, 10).await.unwrap();
    println!(
        "{} learners: hit-rate@10 recommender {:.3}, popularity {:.3}",
        found.learners,
        found.hit_rate(),
        found.baseline_hit_rate()
    );
    assert_eq!(
        found.learners, LEARNERS,
        "every seeded learner holds two courses or more"
    );
    assert!(
        found.hit_rate() >= 1.5 * found.baseline_hit_rate(),
        "{found:?}: {:.3} vs {:.3}",
        found.hit_rate(),
        found.baseline_hit_rate()
    );
    p.stop().await;
}
