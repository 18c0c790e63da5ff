//! Operators debug with grpcurl: a real grpcurl binary (installed by scripts/test-deps.sh)
//! lists the services through server reflection and calls methods, including an
//! authenticated one.

use std::process::Command;

use duovarsity_testkit::TestPlatform;
use serde_json::{Value, json};

fn grpcurl(args: &[&str]) -> (bool, String) {
    let output = Command::new("grpcurl")
        .args(args)
        .output()
        .expect("grpcurl is installed (scripts/test-deps.sh installs it)");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test]
async fn grpcurl_lists_services_and_calls_methods() {
    let platform = TestPlatform::start().await;
    let addr = platform.grpc_addr().to_string();

    let (ok, listing) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || grpcurl(&["-plaintext", &addr, "list"])
    })
    .await
    .unwrap();
    assert!(ok, "{listing}");
    for service in [
        "duovarsity.user.v1.UserService",
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
        let (ok, health) = tokio::task::spawn_blocking({
            let addr = addr.clone();
            let request = json!({ "service": service }).to_string();
            move || {
                grpcurl(&[
                    "-plaintext",
                    "-d",
                    &request,
                    &addr,
                    "grpc.health.v1.Health/Check",
                ])
            }
        })
        .await
        .unwrap();
        assert!(ok, "{service}: {health}");
        assert!(health.contains("\"SERVING\""), "{service}: {health}");
    }

    // Register over REST, then log in and call GetMe with grpcurl.
    let response = platform
        .client
        .post(platform.url("/v1/auth/register"))
        .json(&json!({"email": "ops@example.com", "password": "correct-horse-battery", "displayName": "Ops"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let (ok, login) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            grpcurl(&[
                "-plaintext",
                "-d",
                r#"{"email":"ops@example.com","password":"correct-horse-battery"}"#,
                &addr,
                "duovarsity.user.v1.UserService/Login",
            ])
        }
    })
    .await
    .unwrap();
    assert!(ok, "{login}");
    let login: Value = serde_json::from_str(&login).unwrap();
    let token = login["accessToken"].as_str().unwrap().to_string();

    let (ok, me) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        let header = format!("authorization: Bearer {token}");
        move || {
            grpcurl(&[
                "-plaintext",
                "-H",
                &header,
                &addr,
                "duovarsity.user.v1.UserService/GetMe",
            ])
        }
    })
    .await
    .unwrap();
    assert!(ok, "{me}");
    assert!(me.contains("ops@example.com"), "{me}");

    // Without a token the service itself refuses, with the same rule as the gateway.
    let (ok, refused) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || grpcurl(&["-plaintext", &addr, "duovarsity.user.v1.UserService/GetMe"])
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(refused.contains("Unauthenticated"), "{refused}");

    // The proto's field rules hold for a direct gRPC caller too, before any handler runs:
    // a percent over 100 and a lesson id that is not a UUID, with BadRequest details.
    let (ok, invalid) = tokio::task::spawn_blocking({
        let header = format!("authorization: Bearer {token}");
        move || {
            grpcurl(&[
                "-plaintext",
                "-H",
                &header,
                "-d",
                r#"{"lesson_id":"not-a-uuid","percent":101}"#,
                &addr,
                "duovarsity.course.v1.CourseService/RecordProgress",
            ])
        }
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(invalid.contains("InvalidArgument"), "{invalid}");
    assert!(
        invalid.contains("lesson_id") && invalid.contains("percent"),
        "{invalid}"
    );

    platform.stop().await;
}
