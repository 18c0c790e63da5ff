//! A short load run against a platform in this process: every scenario runs, the report
//! files are written, no read fails, and every live progress frame arrives.

use std::collections::BTreeMap;

use duovarsity_config::Config;
use duovarsity_testkit::TestPlatform;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_covers_every_scenario_and_reports_against_the_slo() {
    let platform = TestPlatform::start().await;
    let env = BTreeMap::from([(
        "DUOVARSITY_DATA_DIR".to_string(),
        platform.data_dir().display().to_string(),
    )]);
    let config = Config::from_sources(None, &env).unwrap();
    duovarsity::seed::demo(&config).await.unwrap();
    assert_eq!(duovarsity::seed::learners(&config, 12).await.unwrap(), 12);

    let out = tempfile::tempdir().unwrap();
    let base = platform.url("");
    let out_dir = out.path().display().to_string();
    let args = <duovarsity_load::Args as clap::Parser>::try_parse_from([
        "duovarsity-load",
        "-H",
        base.trim_end_matches('/'),
        "-u",
        "12",
        "-r",
        "12",
        "-t",
        "8s",
        "--rate",
        "40",
        "--out",
        out_dir.as_str(),
        "--no-reset-metrics",
    ])
    .unwrap();
    let summary = duovarsity_load::run(args).await.unwrap();

    let endpoints: Vec<&str> = summary["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    // One request of each scenario: browsing, the learner session, a purchase, authoring.
    for name in [
        "GET /v1/courses/{id}",
        "PUT /v1/lessons/{id}/progress",
        "POST /sandbox/checkout/{id}/pay",
        "POST /v1/courses",
    ] {
        assert!(
            endpoints.contains(&name),
            "{name} missing from {endpoints:?}"
        );
    }
    assert_eq!(summary["failed_reads"], 0, "{summary:#}");
    let live = &summary["live"];
    assert!(live["expected"].as_u64().unwrap() > 0, "{summary:#}");
    assert_eq!(live["received"], live["expected"], "{summary:#}");
    // Every learner's socket joins its course's room and hears its presence.
    assert!(live["subscribed"].as_u64().unwrap() > 0, "{summary:#}");
    assert_eq!(live["subscribe_errors"], 0, "{summary:#}");
    assert!(live["presence_frames"].as_u64().unwrap() > 0, "{summary:#}");
    assert!(summary["purchases"].as_u64().unwrap() > 0, "{summary:#}");
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(
        report.contains("| `PUT /v1/lessons/{id}/progress` |"),
        "{report}"
    );
    let chart = std::fs::read_to_string(out.path().join("timeline.svg")).unwrap();
    assert_eq!(chart.matches("<polyline").count(), 4);
    assert!(out.path().join("goose.html").exists());
    platform.stop().await;
}
