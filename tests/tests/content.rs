//! Lesson content and media through REST: drafts, versions, HTTP caching (ETag, 304,
//! Cache-Control) that follows the course's visibility at every gateway, and uploads with
//! size and type limits.

use duovarsity_testkit::{TEST_ADMIN as ADMIN, TestPlatform};
use reqwest::{Method, StatusCode};
use serde_json::json;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89";

/// A platform with an admin-owned course of one lesson; returns (platform, admin token,
/// course id, lesson id).
async fn setup(extra: &[(&str, &str)]) -> (TestPlatform, String, String, String) {
    let p = TestPlatform::start_with_admin(duovarsity::Component::All, extra).await;
    let (_, admin) = p.sign_in(ADMIN).await;
    let (course_id, lesson_id) = p.course_with_lesson(&admin, "content-course").await;
    (p, admin, course_id, lesson_id)
}

#[tokio::test]
async fn drafts_publish_as_versions_with_http_caching() {
    let (p, admin, course_id, lesson) = setup(&[]).await;
    let (_, learner) = p.sign_up("learner@example.com").await;

    let (status, _) = p
        .call(
            Method::GET,
            &format!("/v1/lessons/{lesson}/content"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing is published yet");
    // Ids that are not UUIDs are refused by the declared rules, naming the field.
    for path in [
        "/v1/lessons/not-a-uuid/content",
        "/v1/lessons/not-a-uuid/versions",
        "/v1/lessons/not-a-uuid/draft",
        "/v1/media/not-a-uuid",
    ] {
        let (status, problem) = p.call(Method::GET, path, Some(&admin), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {problem}");
        let field = problem["errors"][0]["field"].as_str().unwrap_or_default();
        assert!(["lesson_id", "id"].contains(&field), "{path}: {problem}");
    }
    let (status, problem) = p
        .save_draft(
            &admin,
            &lesson,
            json!({"markdown": "x", "attachmentIds": ["not-a-uuid"]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(
        problem["errors"][0]["field"], "attachment_ids[0]",
        "{problem}"
    );
    let (status, draft) = p
        .save_draft(&admin, &lesson, json!({"markdown": "# Hello\n\nFirst."}))
        .await;
    assert_eq!(status, StatusCode::OK, "{draft}");
    assert_eq!(draft["publishedVersion"], 0);
    let (status, v1) = p
        .call(
            Method::POST,
            &format!("/v1/lessons/{lesson}/content:publish"),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v1}");
    assert_eq!(v1["version"], 1);

    // While the course is a draft, its content is private to the owner.
    let content_url = p.url(&format!("/v1/lessons/{lesson}/content"));
    let anonymous = p.client.get(&content_url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::NOT_FOUND);
    let owner_view = p
        .client
        .get(&content_url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(owner_view.headers()["cache-control"], "private, no-cache");
    p.call(
        Method::POST,
        &format!("/v1/courses/{course_id}:publish"),
        Some(&admin),
        Some(json!({})),
    )
    .await;

    // Published: public caching, an ETag, and 304 for a matching If-None-Match.
    let response = p.client.get(&content_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "public, max-age=60");
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["markdown"], "# Hello\n\nFirst.");
    let revalidated = p
        .client
        .get(&content_url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.headers()["etag"], etag.as_str());
    assert!(revalidated.bytes().await.unwrap().is_empty());

    // Learners may not see or edit drafts.
    assert_eq!(
        p.call(
            Method::GET,
            &format!("/v1/lessons/{lesson}/draft"),
            Some(&learner),
            None
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
    let (status, _) = p
        .save_draft(&learner, &lesson, json!({"markdown": "vandal"}))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A new version replaces the latest at once (cache invalidated); v1 stays, but is not
    // immutable: the course may still turn private.
    p.call(
        Method::PUT,
        &format!("/v1/lessons/{lesson}/draft"),
        Some(&admin),
        Some(json!({"markdown": "# Hello\n\nSecond."})),
    )
    .await;
    let (_, v2) = p
        .call(
            Method::POST,
            &format!("/v1/lessons/{lesson}/content:publish"),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(v2["version"], 2);
    let stale = p
        .client
        .get(&content_url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
    assert_ne!(stale.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(
        stale.json::<serde_json::Value>().await.unwrap()["markdown"],
        "# Hello\n\nSecond."
    );
    let old = p
        .client
        .get(p.url(&format!("/v1/lessons/{lesson}/versions/1")))
        .send()
        .await
        .unwrap();
    assert_eq!(old.headers()["cache-control"], "public, max-age=60");
    assert_eq!(
        old.json::<serde_json::Value>().await.unwrap()["markdown"],
        "# Hello\n\nFirst."
    );
    let (_, versions) = p
        .call(
            Method::GET,
            &format!("/v1/lessons/{lesson}/versions"),
            None,
            None,
        )
        .await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
    p.stop().await;
}

#[tokio::test]
async fn media_uploads_are_checked_stored_and_served() {
    let (p, admin, _, lesson) = setup(&[("DUOVARSITY_MEDIA_MAX_BYTES", "4096")]).await;
    let upload = |bytes: Vec<u8>, content_type: &'static str, filename: &'static str| {
        p.client
            .post(p.url(&format!("/v1/lessons/{lesson}/media?filename={filename}")))
            .bearer_auth(&admin)
            .header("content-type", content_type)
            .body(bytes)
            .send()
    };
    let response = upload(PNG.to_vec(), "image/png", "pixel.png")
        .await
        .unwrap();
    let status = response.status();
    let media: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{media}");
    assert_eq!(
        (media["contentType"].as_str(), media["sizeBytes"].as_str()),
        (Some("image/png"), Some(PNG.len().to_string().as_str()))
    );
    let id = media["id"].as_str().unwrap().to_string();

    let served = p.media(&admin, &id).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.headers()["content-type"], "image/png");
    assert_eq!(served.headers()["x-content-type-options"], "nosniff");
    assert_eq!(served.bytes().await.unwrap().as_ref(), PNG);

    let mismatch = upload(b"%PDF-1.7\n...".to_vec(), "image/png", "fake.png")
        .await
        .unwrap();
    assert_eq!(mismatch.status(), StatusCode::BAD_REQUEST);
    let svg = upload(
        b"<svg xmlns='http://www.w3.org/2000/svg'/>".to_vec(),
        "image/svg+xml",
        "x.svg",
    )
    .await
    .unwrap();
    assert_eq!(svg.status(), StatusCode::BAD_REQUEST);
    let svg: serde_json::Value = svg.json().await.unwrap();
    assert_eq!(svg["errors"][0]["field"], "file.content_type");
    let too_big = upload(vec![b'a'; 8192], "text/plain", "big.txt")
        .await
        .unwrap();
    assert_eq!(too_big.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Attachments in a draft must be this lesson's media and show up in the content.
    let (status, draft) = p
        .save_draft(
            &admin,
            &lesson,
            json!({"markdown": "see image", "attachmentIds": [id]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{draft}");
    assert_eq!(draft["attachments"][0]["url"], format!("/v1/media/{id}"));
    let (status, _) = p
        .call(
            Method::PUT,
            &format!("/v1/lessons/{lesson}/draft"),
            Some(&admin),
            Some(
                json!({"markdown": "x", "attachmentIds": ["01900000-0000-7000-8000-000000000000"]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    p.stop().await;
}

/// A change to a course that makes its content private: (method, path, body) for the
/// course id and lesson id.
type Change = fn(&str, &str) -> (Method, String, Option<serde_json::Value>);

/// Anonymous GET of `url`: (status, whether it came from an edge cache, Cache-Control).
async fn anonymous(gateway: &TestPlatform, url: &str) -> (StatusCode, bool, String) {
    let response = gateway.client.get(gateway.url(url)).send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (cached, control) = (header("age").is_some(), header("cache-control"));
    (response.status(), cached, control.unwrap_or_default())
}

/// Caches follow visibility: a free lesson's content, an old version and its media, cached
/// at two gateways that share Redis, stop being served to anonymous readers within 2 s of
/// the course getting a price, being archived, or losing the lesson.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_content_leaves_every_edge_cache_when_its_course_turns_private() {
    use duovarsity_testkit::{PrivateRedis, TempPostgres};
    let database = TempPostgres::create().await;
    let redis = PrivateRedis::start();
    let (platform, other) = TestPlatform::with_second_gateway(
        &database.url,
        &redis.url(),
        &["user", "course", "content"],
    )
    .await;
    let (_, admin) = platform.sign_in(ADMIN).await;
    let changes: [(&str, Change); 3] = [
        ("price", |course, _| {
            let price = json!({"price": {"currency": "USD", "amountMinor": 4900}});
            (Method::PATCH, format!("/v1/courses/{course}"), Some(price))
        }),
        ("archive", |course, _| {
            (
                Method::POST,
                format!("/v1/courses/{course}:archive"),
                Some(json!({})),
            )
        }),
        ("delete-lesson", |_, lesson| {
            (Method::DELETE, format!("/v1/lessons/{lesson}"), None)
        }),
    ];
    for (name, change) in changes {
        let (course, lesson) = platform
            .course_with_lesson(&admin, &format!("visible-{name}"))
            .await;
        let media = platform
            .client
            .post(platform.url(&format!("/v1/lessons/{lesson}/media?filename=p.png")))
            .bearer_auth(&admin)
            .header("content-type", "image/png")
            .body(PNG.to_vec())
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        for (method, path, body) in [
            (
                Method::PUT,
                format!("/v1/lessons/{lesson}/draft"),
                json!({"markdown": "# Free"}),
            ),
            (
                Method::POST,
                format!("/v1/lessons/{lesson}/content:publish"),
                json!({}),
            ),
        ] {
            let (status, answer) = platform.call(method, &path, Some(&admin), Some(body)).await;
            assert!(status.is_success(), "{path}: {answer}");
        }
        platform.publish(&admin, &course).await;
        let urls = [
            format!("/v1/lessons/{lesson}/content"),
            format!("/v1/lessons/{lesson}/versions/1"),
            format!("/v1/media/{}", media["id"].as_str().unwrap()),
        ];
        for gateway in [&platform, &other] {
            for url in &urls {
                let (status, _, control) = anonymous(gateway, url).await;
                assert_eq!(status, StatusCode::OK, "{name}: {url}");
                assert!(!control.contains("immutable"), "{url}: {control}");
                let (status, cached, _) = anonymous(gateway, url).await;
                assert_eq!((status, cached), (StatusCode::OK, true), "{name}: {url}");
            }
        }
        let (method, path, body) = change(&course, &lesson);
        let (status, answer) = platform.call(method, &path, Some(&admin), body).await;
        assert!(status.is_success(), "{name}: {answer}");
        for gateway in [&platform, &other] {
            for url in &urls {
                let started = std::time::Instant::now();
                loop {
                    let (status, _, _) = anonymous(gateway, url).await;
                    if status != StatusCode::OK {
                        break;
                    }
                    assert!(
                        started.elapsed() < std::time::Duration::from_secs(2),
                        "after {name}, {} still serves {url}",
                        gateway.url("")
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    }
    other.stop().await;
    platform.stop().await;
    database.drop_database().await;
}
