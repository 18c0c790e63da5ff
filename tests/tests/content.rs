//! Lesson content and media through REST: drafts, immutable versions, HTTP caching (ETag,
//! 304, Cache-Control), and uploads with size and type limits.

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
    let (status, draft) = p
        .call(
            Method::PUT,
            &format!("/v1/lessons/{lesson}/draft"),
            Some(&admin),
            Some(json!({"markdown": "# Hello\n\nFirst."})),
        )
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
        .call(
            Method::PUT,
            &format!("/v1/lessons/{lesson}/draft"),
            Some(&learner),
            Some(json!({"markdown": "vandal"})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A new version replaces the latest at once (cache invalidated); v1 stays, immutable.
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
    assert_eq!(
        old.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
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

    let served = p
        .client
        .get(p.url(&format!("/v1/media/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
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
        .call(
            Method::PUT,
            &format!("/v1/lessons/{lesson}/draft"),
            Some(&admin),
            Some(json!({"markdown": "see image", "attachmentIds": [id]})),
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
