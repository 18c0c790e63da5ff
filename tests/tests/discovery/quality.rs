//! Search quality over the demo catalog (`duovarsity seed`): queries as learners type them,
//! with typos and unfinished words, each with the course that must come first.

use std::collections::BTreeMap;

use duovarsity::Component;
use duovarsity_config::Config;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_queries_over_the_demo_catalog_find_the_expected_course_first() {
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
    p.stop().await;
}
