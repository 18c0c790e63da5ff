//! Feature flags on a running platform: the `ai-tutor` flag rolled out by tier, the kill
//! switch and its removal; the admin API's validation, access and audit trail; and the
//! caller's evaluated flags.

use duovarsity_testkit::TestPlatform;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Mocks, ask, chat, learner_of_tier, platform};

fn tutor(state: &str, targeting: Value) -> Value {
    json!({
        "state": state,
        "variants": {"on": true, "off": false},
        "defaultVariant": "off",
        "targeting": targeting
    })
}

async fn put(p: &TestPlatform, token: &str, key: &str, definition: Value) -> (StatusCode, Value) {
    p.call(
        Method::PUT,
        &format!("/v1/admin/flags/{key}"),
        Some(token),
        Some(definition),
    )
    .await
}

async fn delete(p: &TestPlatform, token: &str, key: &str) -> StatusCode {
    let path = format!("/v1/admin/flags/{key}");
    p.call(Method::DELETE, &path, Some(token), None).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ai_tutor_rolls_out_by_tier_is_killed_and_every_change_is_audited() {
    let mocks = Mocks::start().await;
    let p = platform(&mocks.file, &[]).await;
    let (admin_id, admin) = p.sign_in(duovarsity_testkit::TEST_ADMIN).await;
    let free = learner_of_tier(&p, "free@example.com", "TIER_FREE").await;
    let premium = learner_of_tier(&p, "premium@example.com", "TIER_PREMIUM").await;
    let asks = |token: String| {
        let p = &p;
        async move { chat(p, &token, ask("model-a", "What is a borrow?")).await }
    };

    // Undefined: the built-in default (on) for everyone.
    assert_eq!(asks(free.clone()).await.0, StatusCode::OK);

    // Premium learners first.
    let premium_first = tutor(
        "ENABLED",
        json!({"if": [{"in": [{"var": "tier"}, ["premium"]]}, "on"]}),
    );
    let (status, body) = put(&p, &admin, "ai-tutor", premium_first.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["updatedBy"], admin_id);
    let (status, _, _, refused) = asks(free.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert_eq!(refused["reason"], "FEATURE_DISABLED", "{refused}");
    assert_eq!(asks(premium.clone()).await.0, StatusCode::OK);

    // What the front end sees, cacheable for this user only.
    let response = reqwest::Client::new()
        .get(p.url("/v1/me/flags"))
        .bearer_auth(&free)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "private, max-age=5");
    let mine: Value = response.json().await.unwrap();
    let tutor_flag = mine["flags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["key"] == "ai-tutor")
        .cloned()
        .unwrap();
    assert_eq!(tutor_flag["value"], false, "{mine}");
    assert_eq!(tutor_flag["variant"], "off");

    // A broken rule is refused with the reason, and the running flag stays.
    let broken = tutor(
        "ENABLED",
        json!({"if": [{"==": [{"var": "email"}, "x"]}, "on"]}),
    );
    let (status, body) = put(&p, &admin, "ai-tutor", broken).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("unknown attribute"), "{body}");
    assert_eq!(asks(premium.clone()).await.0, StatusCode::OK);
    let (_, stored) = p
        .call(Method::GET, "/v1/admin/flags/ai-tutor", Some(&admin), None)
        .await;
    assert_eq!(stored["definition"], premium_first);

    // Only admins read or write flags.
    let (status, _) = put(&p, &premium, "ai-tutor", tutor("ENABLED", json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    for path in [
        "/v1/admin/flags/ai-tutor",
        "/v1/admin/flags/ai-tutor/history",
        "/v1/admin/flags",
    ] {
        let (status, _) = p.call(Method::GET, path, Some(&premium), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
        let (status, _) = p.call(Method::GET, path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }

    // The kill switch: off for everyone, premium too.
    let killed = tutor(
        "DISABLED",
        json!({"if": [{"in": [{"var": "tier"}, ["premium"]]}, "on"]}),
    );
    assert_eq!(
        put(&p, &admin, "ai-tutor", killed.clone()).await.0,
        StatusCode::OK
    );
    assert_eq!(asks(premium.clone()).await.0, StatusCode::FORBIDDEN);

    // Removed: the built-in default again.
    assert_eq!(delete(&p, &admin, "ai-tutor").await, StatusCode::OK);
    assert_eq!(asks(free.clone()).await.0, StatusCode::OK);
    assert_eq!(delete(&p, &admin, "ai-tutor").await, StatusCode::NOT_FOUND);

    // Every change, newest first, with who and the definitions before and after; the
    // refused one is not there.
    let (status, history) = p
        .call(
            Method::GET,
            "/v1/admin/flags/ai-tutor/history",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let changes = history["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 3, "{history}");
    assert!(
        changes
            .iter()
            .all(|c| c["actor"] == admin_id && c["source"] == "api")
    );
    assert_eq!(changes[0]["previous"], killed);
    assert!(
        changes[0].get("definition").is_none_or(Value::is_null),
        "a delete: {history}"
    );
    assert_eq!(changes[1]["definition"], killed);
    assert_eq!(changes[1]["previous"], premium_first);
    assert!(
        changes[2].get("previous").is_none_or(Value::is_null),
        "a create"
    );
    let (_, page) = p
        .call(
            Method::GET,
            "/v1/admin/flags/ai-tutor/history?pageSize=2",
            Some(&admin),
            None,
        )
        .await;
    let token = page["nextPageToken"].as_str().unwrap();
    let (_, rest) = p
        .call(
            Method::GET,
            &format!("/v1/admin/flags/ai-tutor/history?pageSize=2&pageToken={token}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(rest["changes"].as_array().unwrap().len(), 1, "{rest}");
    p.stop().await;
}

fn flagd_file(free_learners: &str) -> String {
    json!({"flags": {"ai-tutor": tutor(
        "ENABLED",
        json!({"if": [{"==": [{"var": "tier"}, "free"]}, free_learners, "on"]}),
    )}})
    .to_string()
}

/// `DUOVARSITY_FLAGS_FILE` (a ConfigMap in Kubernetes): imported at start and when it
/// changes, recorded with the file's SHA-256; a broken file changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flags_file_is_imported_at_start_and_on_change_with_its_checksum() {
    let mocks = Mocks::start().await;
    let flags_file = mocks.dir.path().join("flags.json");
    std::fs::write(&flags_file, flagd_file("off")).unwrap();
    let p = platform(
        &mocks.file,
        &[("DUOVARSITY_FLAGS_FILE", flags_file.display().to_string())],
    )
    .await;
    let (_, admin) = p.sign_in(duovarsity_testkit::TEST_ADMIN).await;
    let free = learner_of_tier(&p, "file-free@example.com", "TIER_FREE").await;
    let asks = || chat(&p, &free, ask("model-a", "What is a trait?"));
    assert_eq!(asks().await.0, StatusCode::FORBIDDEN, "imported at start");

    let sha256 = |text: &str| duovarsity_common::digest::sha256_hex(text.as_bytes());
    let history = || async {
        let (_, history) = p
            .call(
                Method::GET,
                "/v1/admin/flags/ai-tutor/history",
                Some(&admin),
                None,
            )
            .await;
        history["changes"].as_array().cloned().unwrap_or_default()
    };
    let changes = history().await;
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0]["source"], "file");
    assert_eq!(changes[0]["actor"], "file");
    assert_eq!(changes[0]["checksum"], sha256(&flagd_file("off")));

    // Rolled out to free learners by editing the file.
    std::fs::write(&flags_file, flagd_file("on")).unwrap();
    crate::wait_until("the edited file applies", || async {
        asks().await.0 == StatusCode::OK
    })
    .await;
    assert_eq!(history().await[0]["checksum"], sha256(&flagd_file("on")));

    // A broken file: refused, the flags in use stay, nothing recorded.
    std::fs::write(
        &flags_file,
        r#"{"flags": {"ai-tutor": {"state": "MAYBE"}}}"#,
    )
    .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(asks().await.0, StatusCode::OK);
    assert_eq!(history().await.len(), 2);
    p.stop().await;
}

/// Reloads of the AI catalog, applied or refused, are in the same audit trail as flag
/// changes, with the file's checksum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_reloads_are_recorded_in_the_audit_trail() {
    let mocks = Mocks::start().await;
    let (file, text) = (&mocks.file, |model: &str| mocks.catalog(model));
    let p = platform(file, &[]).await;
    let (_, admin) = p.sign_in(duovarsity_testkit::TEST_ADMIN).await;
    let changes = || async {
        let (status, body) = p
            .call(
                Method::GET,
                "/v1/admin/changes?subject=settings/ai-catalog",
                Some(&admin),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["changes"].as_array().cloned().unwrap_or_default()
    };

    std::fs::write(file, text("model-b")).unwrap();
    crate::wait_until("the applied reload is recorded", || async {
        changes().await.len() == 1
    })
    .await;
    std::fs::write(file, "this is not toml [").unwrap();
    crate::wait_until("the refused reload is recorded", || async {
        changes().await.len() == 2
    })
    .await;
    let recorded = changes().await;
    let (refused, applied) = (&recorded[0], &recorded[1]);
    assert_eq!(applied["source"], "file");
    assert_eq!(applied["definition"]["applied"], true, "{applied}");
    assert_eq!(
        applied["checksum"],
        duovarsity_common::digest::sha256_hex(text("model-b").as_bytes())
    );
    assert_eq!(refused["definition"]["applied"], false, "{refused}");
    assert!(!refused["definition"]["error"].as_str().unwrap().is_empty());
    assert!(applied["actor"].as_str().unwrap().starts_with("ai-catalog"));

    // The whole trail lists them too; learners may not read it.
    let (_, all) = p
        .call(Method::GET, "/v1/admin/changes", Some(&admin), None)
        .await;
    assert!(all["changes"].as_array().unwrap().len() >= 2, "{all}");
    let learner = learner_of_tier(&p, "curious@example.com", "TIER_FREE").await;
    let (status, _) = p
        .call(Method::GET, "/v1/admin/changes", Some(&learner), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    p.stop().await;
}

/// The flag API against hostile input: an oversized or deeply nested definition and a bad
/// key are refused with the reason; concurrent writes leave the history and the state in
/// agreement; each caller's evaluated flags are their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_definitions_races_and_other_callers_change_nothing_they_should_not() {
    let mocks = Mocks::start().await;
    let p = platform(&mocks.file, &[]).await;
    let (_, admin) = p.sign_in(duovarsity_testkit::TEST_ADMIN).await;

    // Larger than 16 KiB: refused, and nothing is stored.
    let huge = json!({"state": "ENABLED", "variants": {"on": "x".repeat(20_000)},
                      "defaultVariant": "on"});
    let (status, body) = put(&p, &admin, "huge", huge).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("bytes"), "{body}");
    let (status, _) = p
        .call(Method::GET, "/v1/admin/flags/huge", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Nested 300 deep: refused before it is compiled; the platform answers on.
    let mut deep = json!({"==": [{"var": "tier"}, "free"]});
    for _ in 0..300 {
        deep = json!({"!": deep});
    }
    let (status, body) = put(
        &p,
        &admin,
        "deep",
        tutor("ENABLED", json!({"if": [deep, "on"]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // A key outside the alphabet.
    let (status, body) = put(&p, &admin, "Not_A-Key", tutor("ENABLED", json!({}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("flag key"), "{body}");

    // Twenty admins' writes at once: the history holds each applied change once, and the
    // flag in force is the newest change's definition.
    let writes = (0..20).map(|n| {
        let definition = json!({"state": "ENABLED", "variants": {"v": n}, "defaultVariant": "v"});
        let (p, admin) = (&p, &admin);
        async move { put(p, admin, "raced", definition).await.0 }
    });
    for status in futures::future::join_all(writes).await {
        assert_eq!(status, StatusCode::OK);
    }
    let (_, history) = p
        .call(
            Method::GET,
            "/v1/admin/flags/raced/history",
            Some(&admin),
            None,
        )
        .await;
    let changes = history["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 20, "{history}");
    let (_, stored) = p
        .call(Method::GET, "/v1/admin/flags/raced", Some(&admin), None)
        .await;
    assert_eq!(stored["definition"], changes[0]["definition"]);

    // Each caller gets their own evaluation, never another's (the answer is private).
    let (ada_id, ada) = p.sign_up("ada@example.com").await;
    let (_, bob) = p.sign_up("bob@example.com").await;
    let only_ada = tutor(
        "ENABLED",
        json!({"if": [{"==": [{"var": "userId"}, ada_id]}, "on"]}),
    );
    assert_eq!(
        put(&p, &admin, "ai-tutor", only_ada).await.0,
        StatusCode::OK
    );
    let tutor_for = |token: String| {
        let p = &p;
        async move {
            let (_, mine) = p
                .call(Method::GET, "/v1/me/flags", Some(&token), None)
                .await;
            mine["flags"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["key"] == "ai-tutor")
                .map(|f| f["value"].clone())
        }
    };
    for _ in 0..2 {
        assert_eq!(tutor_for(ada.clone()).await, Some(json!(true)));
        assert_eq!(tutor_for(bob.clone()).await, Some(json!(false)));
    }
    let (status, _) = p.call(Method::GET, "/v1/me/flags", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    p.stop().await;
}
