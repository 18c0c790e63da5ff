//! Operators debug with grpcurl: a real grpcurl binary (installed by scripts/test-deps.sh)
//! lists the services through server reflection and calls methods, including an
//! authenticated one.

use std::process::Command;

use duovarsity_testkit::TestPlatform;
use serde_json::{Value, json};

/// Runs grpcurl with `args` (off the async workers): whether it succeeded, and what it
/// printed.
async fn grpcurl(args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let output = Command::new("grpcurl")
            .args(&args)
            .output()
            .expect("grpcurl is installed (scripts/test-deps.sh installs it)");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        (output.status.success(), text)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn grpcurl_lists_services_and_calls_methods() {
    let platform = TestPlatform::start().await;
    let addr = platform.grpc_addr().to_string();

    let (ok, listing) = grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(ok, "{listing}");
    for service in [
        "duovarsity.user.v1.UserService",
        "duovarsity.flags.v1.FlagService",
        "duovarsity.analytics.v1.AnalyticsService",
        "duovarsity.discovery.v1.DiscoveryService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            listing.lines().any(|line| line == service),
            "{service} missing from:\n{listing}"
        );
    }

    // Readiness per service, and the liveness entry the chart's liveness probes ask for.
    for service in ["duovarsity.user.v1.UserService", "liveness"] {
        let request = json!({ "service": service }).to_string();
        let (ok, health) = grpcurl(&[
            "-plaintext",
            "-d",
            &request,
            &addr,
            "grpc.health.v1.Health/Check",
        ])
        .await;
        assert!(ok, "{service}: {health}");
        assert!(health.contains("\"SERVING\""), "{service}: {health}");
    }

    let response = platform
        .client
        .post(platform.url("/v1/auth/register"))
        .json(&json!({"email": "ops@example.com", "password": "correct-horse-battery", "displayName": "Ops"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let (ok, login) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"email":"ops@example.com","password":"correct-horse-battery"}"#,
        &addr,
        "duovarsity.user.v1.UserService/Login",
    ])
    .await;
    assert!(ok, "{login}");
    let login: Value = serde_json::from_str(&login).unwrap();
    let token = login["accessToken"].as_str().unwrap().to_string();
    let header = format!("authorization: Bearer {token}");

    let me = [
        "-plaintext",
        "-H",
        &header,
        &addr,
        "duovarsity.user.v1.UserService/GetMe",
    ];
    let (ok, me) = grpcurl(&me).await;
    assert!(ok, "{me}");
    assert!(me.contains("ops@example.com"), "{me}");

    // Feature flags: the caller's evaluated flags; listing definitions is for admins.
    let evaluate = [
        "-plaintext",
        "-H",
        &header,
        &addr,
        "duovarsity.flags.v1.FlagService/EvaluateFlags",
    ];
    let (ok, evaluated) = grpcurl(&evaluate).await;
    assert!(ok, "{evaluated}");
    let evaluated: Value = serde_json::from_str(&evaluated).unwrap();
    assert!(
        evaluated["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["key"] == "ai-tutor" && f["value"] == true && f["reason"] == "DEFAULT"),
        "{evaluated}"
    );
    let (ok, refused) = grpcurl(&[
        "-plaintext",
        "-H",
        &header,
        &addr,
        "duovarsity.flags.v1.FlagService/ListFlags",
    ])
    .await;
    assert!(!ok);
    assert!(refused.contains("PermissionDenied"), "{refused}");

    // Analytics: the caller's own activity (nothing yet, in UTC), and a preference change;
    // the platform overview is for admins.
    let activity = [
        "-plaintext",
        "-H",
        &header,
        &addr,
        "duovarsity.analytics.v1.AnalyticsService/GetMyActivity",
    ];
    let (ok, activity) = grpcurl(&activity).await;
    assert!(ok, "{activity}");
    let activity: Value = serde_json::from_str(&activity).unwrap();
    assert_eq!(activity["timeZone"], "UTC", "{activity}");
    assert_eq!(
        activity["calendar"].as_array().unwrap().len(),
        30,
        "{activity}"
    );
    let (ok, preferences) = grpcurl(&[
        "-plaintext",
        "-H",
        &header,
        "-d",
        r#"{"leaderboardHidden":true,"dailyGoalXp":30}"#,
        &addr,
        "duovarsity.analytics.v1.AnalyticsService/UpdateMyPreferences",
    ])
    .await;
    assert!(ok, "{preferences}");
    let preferences: Value = serde_json::from_str(&preferences).unwrap();
    assert_eq!(preferences["dailyGoalXp"], 30, "{preferences}");
    assert_eq!(preferences["leaderboardHidden"], true, "{preferences}");
    let (ok, refused) = grpcurl(&[
        "-plaintext",
        "-H",
        &header,
        &addr,
        "duovarsity.analytics.v1.AnalyticsService/GetPlatformAnalytics",
    ])
    .await;
    assert!(!ok);
    assert!(refused.contains("PermissionDenied"), "{refused}");

    // Discovery: search anonymously (nothing is published here, and facets come back
    // empty), and a filter outside its values refused with the field named.
    let (ok, found) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"q":"pyth","page_size":5}"#,
        &addr,
        "duovarsity.discovery.v1.DiscoveryService/Search",
    ])
    .await;
    assert!(ok, "{found}");
    let found: Value = serde_json::from_str(&found).unwrap();
    assert!(found["facets"].is_object(), "{found}");
    let (ok, refused) = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"q":"pyth","level":"expert"}"#,
        &addr,
        "duovarsity.discovery.v1.DiscoveryService/Search",
    ])
    .await;
    assert!(!ok);
    assert!(
        refused.contains("InvalidArgument") && refused.contains("level"),
        "{refused}"
    );

    // Without a token the service itself refuses, with the same rule as the gateway.
    let (ok, refused) =
        grpcurl(&["-plaintext", &addr, "duovarsity.user.v1.UserService/GetMe"]).await;
    assert!(!ok);
    assert!(refused.contains("Unauthenticated"), "{refused}");

    // The proto's field rules hold for a direct gRPC caller too, before any handler runs:
    // a percent over 100 and a lesson id that is not a UUID, with BadRequest details.
    let (ok, invalid) = grpcurl(&[
        "-plaintext",
        "-H",
        &header,
        "-d",
        r#"{"lesson_id":"not-a-uuid","percent":101}"#,
        &addr,
        "duovarsity.course.v1.CourseService/RecordProgress",
    ])
    .await;
    assert!(!ok);
    assert!(invalid.contains("InvalidArgument"), "{invalid}");
    assert!(
        invalid.contains("lesson_id") && invalid.contains("percent"),
        "{invalid}"
    );

    platform.stop().await;
}
