//! The discovery service on a running platform, through REST: what search finds and shows
//! to whom (`search`: typos, prefixes, facets, highlights, pages, paid text, bad input),
//! how the index follows the catalog's events and `duovarsity discovery reindex`
//! (`catalog`), the fixed set of queries over the demo catalog (`quality`), and
//! recommendations and related courses (`recommend`).

mod catalog;
mod quality;
mod recommend;
mod search;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use duovarsity_testkit::TestPlatform;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A course to create: its fields and its lessons as (title, Markdown).
pub struct Spec<'a> {
    pub slug: &'a str,
    pub title: &'a str,
    pub summary: &'a str,
    pub level: &'a str,
    pub language: &'a str,
    /// USD cents; 0: free.
    pub price: i64,
    pub lessons: &'a [(&'a str, &'a str)],
}

/// Creates `spec` as the holder of `token`, publishes every lesson's text and the course;
/// (course id, lesson ids).
pub async fn course(p: &TestPlatform, token: &str, spec: &Spec<'_>) -> (String, Vec<String>) {
    let mut course = json!({"slug": spec.slug, "title": spec.title, "summary": spec.summary,
                            "level": spec.level, "language": spec.language});
    if spec.price > 0 {
        course["price"] = json!({"currency": "USD", "amountMinor": spec.price});
    }
    let (course_id, section_id) = {
        let created = ok(p, token, Method::POST, "/v1/courses", course).await;
        let id = created["id"].as_str().unwrap().to_string();
        let section = ok(
            p,
            token,
            Method::POST,
            &format!("/v1/courses/{id}/sections"),
            json!({"title": "Main"}),
        )
        .await;
        (id, section["id"].as_str().unwrap().to_string())
    };
    let mut lessons = Vec::new();
    for (title, text) in spec.lessons {
        let lesson = ok(
            p,
            token,
            Method::POST,
            &format!("/v1/sections/{section_id}/lessons"),
            json!({"title": title, "kind": "LESSON_KIND_TEXT", "required": true}),
        )
        .await;
        let id = lesson["id"].as_str().unwrap().to_string();
        let (status, draft) = p.save_draft(token, &id, json!({"markdown": text})).await;
        assert!(status.is_success(), "{draft}");
        ok(
            p,
            token,
            Method::POST,
            &format!("/v1/lessons/{id}/content:publish"),
            json!({}),
        )
        .await;
        lessons.push(id);
    }
    p.publish(token, &course_id).await;
    (course_id, lessons)
}

/// A call that must succeed; its answer.
pub async fn ok(p: &TestPlatform, token: &str, method: Method, path: &str, body: Value) -> Value {
    let (status, answer) = p.call(method, path, Some(token), Some(body)).await;
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

/// `GET /v1/search` with `params` as the holder of `token` (anonymous when None).
pub async fn search(
    p: &TestPlatform,
    token: Option<&str>,
    params: &[(&str, &str)],
) -> (StatusCode, Value) {
    let query: String = form_urlencoded(params);
    p.call(Method::GET, &format!("/v1/search?{query}"), token, None)
        .await
}

fn form_urlencoded(params: &[(&str, &str)]) -> String {
    params
        .iter()
        .map(|(k, v)| {
            let encoded: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={encoded}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The search's hits as (kind, title) pairs.
pub fn titles(found: &Value) -> Vec<(String, String)> {
    found["hits"]
        .as_array()
        .map(|hits| {
            hits.iter()
                .map(|h| {
                    (
                        h["kind"].as_str().unwrap_or_default().to_string(),
                        h["title"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `total` of a search answer (int64 travels as a string in JSON).
pub fn total(found: &Value) -> i64 {
    found["total"]
        .as_str()
        .map_or(0, |t| t.parse().unwrap_or_default())
}

/// Searches until `done` holds of the answer (within 10 s); the answer and how long it
/// took.
pub async fn until(
    p: &TestPlatform,
    token: Option<&str>,
    params: &[(&str, &str)],
    done: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let began = Instant::now();
    loop {
        let (status, found) = search(p, token, params).await;
        if status == StatusCode::OK && done(&found) {
            return (found, began.elapsed());
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "search {params:?} never got there; last answer {status}: {found}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Facet counts of one facet as value to count.
pub fn facet(found: &Value, name: &str) -> BTreeMap<String, i64> {
    found["facets"][name]
        .as_array()
        .map(|values| {
            values
                .iter()
                .map(|v| {
                    (
                        v["value"].as_str().unwrap_or_default().to_string(),
                        v["count"].as_str().map_or(0, |c| c.parse().unwrap_or(0)),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
