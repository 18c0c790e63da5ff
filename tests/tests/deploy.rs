//! What ships to a cluster, checked with the tools operators use: the Helm chart, image and
//! compose file (deploy/checks/check_deploy.py: helm-python-sdk, kubernetes-validate,
//! BuildKit's Dockerfile parser, check-jsonschema), the Prometheus rules (promtool), and
//! the dashboards and alerts against a scrape of a running platform: every metric they
//! query is one the platform exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use duovarsity::Component;
use duovarsity_common::events::Outgoing;
use duovarsity_testkit::llm::{MockLlm, one_model_catalog};
use duovarsity_testkit::{TEST_ADMIN, TestPlatform};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// Runs `program` with `args` in the repository root; its output on failure.
fn run(program: &str, args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    let output = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (scripts/test-deps.sh installs it): {e}"));
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[test]
fn chart_image_and_compose_pass_their_checks() {
    let modules = duovarsity::module_names().join(",");
    let (ok, output) = run(
        "python3",
        &["-m", "unittest", "-v", "deploy/checks/check_deploy.py"],
        &[("DUOVARSITY_MODULES", modules)],
    );
    assert!(ok, "{output}");
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let (ok, output) = run(
        "promtool",
        &["check", "rules", "deploy/prometheus/rules.yml"],
        &[],
    );
    assert!(ok, "{output}");
    let (ok, output) = run(
        "promtool",
        &["test", "rules", "deploy/prometheus/rules_test.yml"],
        &[],
    );
    assert!(ok, "{output}");
}

/// PromQL words that are not metric names: aggregation operators (which may be followed
/// by a grouping before their parenthesis) and keywords.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
];

/// The metric names a PromQL expression selects: identifiers that are neither functions
/// (followed by `(`), nor keywords, nor inside label matchers, grouping lists, ranges or
/// strings.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let (mut i, mut braces, mut brackets) = (0, 0usize, 0usize);
    let mut grouping = false;
    let mut parens_in_grouping = 0usize;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
                continue;
            }
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '[' => brackets += 1,
            ']' => brackets = brackets.saturating_sub(1),
            '(' if grouping => parens_in_grouping += 1,
            ')' if grouping => {
                parens_in_grouping -= 1;
                if parens_in_grouping == 0 {
                    grouping = false;
                }
            }
            _ => {}
        }
        if (c.is_ascii_alphabetic() || c == '_' || c == ':')
            && (i == 0 || !(chars[i - 1].is_ascii_alphanumeric() || chars[i - 1] == '.'))
        {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if matches!(
                word.as_str(),
                "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
            ) {
                grouping = next == Some(&'(');
            } else if braces == 0
                && brackets == 0
                && !grouping
                && next != Some(&'(')
                && !PROMQL_WORDS.contains(&word.to_ascii_lowercase().as_str())
            {
                names.insert(word);
            }
            continue;
        }
        i += 1;
    }
    names
}

/// Every PromQL expression of the dashboards (panel targets) and of the alert rules, with
/// where it comes from.
fn shipped_queries() -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for entry in std::fs::read_dir(root().join("deploy/grafana")).unwrap() {
        let path = entry.unwrap().path();
        let board: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let panels = board["panels"].as_array().expect("a dashboard has panels");
        assert!(!panels.is_empty(), "{}", path.display());
        for panel in panels {
            let targets = panel["targets"].as_array().expect("a panel has targets");
            assert!(!targets.is_empty(), "{panel}");
            for target in targets {
                let expr = target["expr"].as_str().expect("a target has an expr");
                queries.push((
                    format!("{} / {}", path.display(), panel["title"]),
                    expr.to_string(),
                ));
            }
        }
    }
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/rules.yml")).unwrap();
    // The rules file is YAML; its `expr:` values are one line or a folded block.
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(expr) = line.trim().strip_prefix("expr:") else {
            continue;
        };
        let mut expr = expr.trim().to_string();
        if expr == ">-" {
            expr.clear();
            while let Some(next) = lines.peek()
                && next.starts_with("          ")
            {
                expr.push_str(lines.next().unwrap().trim());
                expr.push(' ');
            }
        }
        queries.push(("deploy/prometheus/rules.yml".into(), expr));
    }
    queries
}

#[test]
fn the_metric_name_extractor_reads_promql() {
    assert_eq!(
        metric_names(
            r#"sum by (le, method) (rate(grpc_server_handling_seconds_bucket{code!="Ok"}[5m])) / on(method) group_left x_total offset 5m"#
        ),
        BTreeSet::from([
            "grpc_server_handling_seconds_bucket".into(),
            "x_total".into()
        ])
    );
    assert_eq!(
        metric_names("duovarsity:cache_hit_ratio_5m < 0.9 and sum(rate(a_total[5m])) > 1e9"),
        BTreeSet::from(["duovarsity:cache_hit_ratio_5m".into(), "a_total".into()])
    );
}

/// Exercises every part of the platform whose metrics the dashboards and alerts read:
/// REST and gRPC calls, caches, events (one dead-lettered), a live connection, mail, AI
/// answers (cached, paid and refused for budget) and payments.
async fn exercise(p: &TestPlatform, mock: &MockLlm) {
    let (_, learner) = p.sign_up("metrics@example.com").await;
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (course_id, lesson_id) = p.course_with_lesson(&admin, "metrics").await;
    p.publish(&admin, &course_id).await;
    for _ in 0..3 {
        let (status, body) = p
            .call(
                Method::GET,
                &format!("/v1/courses/{course_id}"),
                Some(&learner),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    p.enroll(&learner, &course_id).await;
    let _socket = p.live(&learner, 0).await;
    // A search (answered once this replica's index is built).
    let mut searched = false;
    for _ in 0..100 {
        let (status, _) = p.call(Method::GET, "/v1/search?q=metr", None, None).await;
        if status == StatusCode::OK {
            searched = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(searched, "search answers");

    // A record that is no event envelope: the consumers dead-letter it.
    p.bus()
        .publish(Outgoing {
            topic: "user.v1".into(),
            key: "garbage".into(),
            payload: Bytes::from_static(b"not an envelope"),
            headers: vec![],
        })
        .await
        .unwrap();

    let ask = |body: Value| {
        let request = p
            .client
            .post(p.url("/v1/ai/chat/completions"))
            .bearer_auth(&learner)
            .json(&body);
        async move { request.send().await.unwrap().status() }
    };
    // A shared hint (no words of the learner's own): the second is a cache hit.
    let hint = json!({"model": "metered", "messages": [],
                      "task": {"kind": "hint", "lesson_id": lesson_id, "hint_level": 1}});
    assert_eq!(ask(hint.clone()).await, StatusCode::OK);
    assert_eq!(ask(hint).await, StatusCode::OK);
    // The budget holds ten answers; the eleventh chat is refused.
    let mut refused = false;
    for n in 0..12 {
        let chat =
            json!({"model": "metered", "messages": [{"role": "user", "content": format!("q{n}")}]});
        refused |= ask(chat).await == StatusCode::TOO_MANY_REQUESTS;
    }
    assert!(refused, "the budget refuses once spent");
    assert!(mock.calls() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_alerts_use_only_metrics_the_platform_exports() {
    let mock = MockLlm::openai().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, &mock.key).unwrap();
    // Hints are shared through the cache, as in the built-in catalog.
    let catalog = one_model_catalog(&mock, &key_file, "metered", 1.0, 10, 0.0001).replace(
        "[policy.tasks.hint]\ncacheable = false",
        "[policy.tasks.hint]\ncacheable = true",
    );
    assert!(catalog.contains("cacheable = true"));
    let file = dir.path().join("catalog.toml");
    std::fs::write(&file, catalog).unwrap();
    let file = file.display().to_string();
    let p = TestPlatform::start_with_admin(
        Component::All,
        &[("DUOVARSITY_AI_CATALOG_FILE", file.as_str())],
    )
    .await;
    exercise(&p, &mock).await;

    let queries = shipped_queries();
    let wanted: BTreeSet<String> = queries
        .iter()
        .flat_map(|(_, expr)| metric_names(expr))
        .filter(|name| !name.starts_with("duovarsity:"))
        .collect();
    // Gauges and counters appear as their events happen (consumers, relays, the usage
    // writer run on their own tasks): scrape until everything is there or 20 s passed.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let missing = loop {
        let scrape = p.metrics().await;
        let exported: BTreeSet<String> = scrape
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .filter_map(|line| line.split(['{', ' ']).next())
            .map(str::to_string)
            .collect();
        let missing: Vec<&String> = wanted.difference(&exported).collect();
        if missing.is_empty() || tokio::time::Instant::now() > deadline {
            break missing
                .into_iter()
                .map(|name| {
                    let users: Vec<&str> = queries
                        .iter()
                        .filter(|(_, expr)| metric_names(expr).contains(name))
                        .map(|(place, _)| place.as_str())
                        .collect();
                    format!("{name} (used by {users:?})")
                })
                .collect::<Vec<_>>();
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert!(missing.is_empty(), "queried but not exported: {missing:#?}");
    // Recording rules used by alerts are defined in the same file.
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/rules.yml")).unwrap();
    for name in queries
        .iter()
        .flat_map(|(_, expr)| metric_names(expr))
        .filter(|name| name.starts_with("duovarsity:"))
    {
        assert!(
            rules.contains(&format!("record: {name}")),
            "{name} is not recorded"
        );
    }
    assert!(wanted.len() >= 15, "{wanted:?}");
    p.stop().await;
}
