//! Lesson media on S3-compatible storage (moto, started by the test setup): what is
//! uploaded through the gateway lands in the bucket and comes back byte for byte.

use duovarsity_testkit::{TEST_ADMIN, TestPlatform};
use reqwest::StatusCode;

const PNG: &[u8] =
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x02\x00\x00\x00\x02\x08\x06\x00\x00\x00";

#[tokio::test]
async fn media_round_trips_through_an_s3_bucket() {
    let endpoint = std::env::var("DUOVARSITY_TEST_S3_ENDPOINT")
        .expect("DUOVARSITY_TEST_S3_ENDPOINT is not set: run the tests with `make test` (scripts/test-services.sh starts moto)");
    let bucket = format!("dv-media-{}", std::process::id());
    let client = reqwest::Client::new();
    let created = client
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("moto answers");
    assert!(
        created.status().is_success(),
        "creating the bucket: {}",
        created.status()
    );

    let media_url = format!("s3://{bucket}/media");
    let options = format!(
        "aws_endpoint={endpoint},aws_allow_http=true,aws_region=us-east-1,aws_access_key_id=test,aws_secret_access_key=test"
    );
    let p = TestPlatform::start_with_admin(
        duovarsity::Component::All,
        &[
            ("DUOVARSITY_MEDIA_URL", &media_url),
            ("DUOVARSITY_MEDIA_OPTIONS", &options),
        ],
    )
    .await;
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (_, lesson_id) = p.course_with_lesson(&admin, "s3-course").await;

    let uploaded = p
        .client
        .post(p.url(&format!(
            "/v1/lessons/{lesson_id}/media?filename=diagram.png"
        )))
        .bearer_auth(&admin)
        .header("content-type", "image/png")
        .body(PNG.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), StatusCode::OK);
    let media: serde_json::Value = uploaded.json().await.unwrap();
    let id = media["id"].as_str().unwrap();

    // The object is in the bucket under the configured prefix...
    let listing = client
        .get(format!("{endpoint}/{bucket}?list-type=2"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listing.contains(&format!("media/lessons/{lesson_id}/{id}")),
        "{listing}"
    );
    // ...and comes back through the gateway unchanged.
    let served = p.media(&admin, id).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.bytes().await.unwrap().as_ref(), PNG);
    p.stop().await;
}
