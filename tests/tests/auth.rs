//! The account and token lifecycle through the public REST API, on the platform started
//! in-process (embedded mode: SQLite, one process).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use duovarsity_testkit::TestPlatform;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use duovarsity_testkit::TEST_PASSWORD as PASSWORD;

async fn post(platform: &TestPlatform, path: &str, body: Value) -> (StatusCode, Value) {
    platform.call(Method::POST, path, None, Some(body)).await
}

async fn get(platform: &TestPlatform, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    platform.call(Method::GET, path, token, None).await
}

async fn register_and_login(platform: &TestPlatform, email: &str) -> Value {
    let (status, body) = post(
        platform,
        "/v1/auth/register",
        json!({"email": email, "password": PASSWORD, "displayName": "Ada Lovelace"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, tokens) = post(
        platform,
        "/v1/auth/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    tokens
}

#[tokio::test]
async fn register_login_me_refresh_reuse_and_logout() {
    let platform = TestPlatform::start().await;

    let (status, body) = post(
        &platform,
        "/v1/auth/register",
        json!({"email": "  Ada@Example.COM ", "password": PASSWORD, "displayName": "Ada Lovelace"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["user"]["role"], "ROLE_LEARNER");
    assert!(body["user"].get("password").is_none());

    // The same address again, differently cased, is taken.
    let (status, problem) = post(
        &platform,
        "/v1/auth/register",
        json!({"email": "ADA@example.com", "password": PASSWORD, "displayName": "Imposter"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(problem["reason"], "EMAIL_TAKEN");

    let (status, tokens) = post(
        &platform,
        "/v1/auth/login",
        json!({"email": "ada@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["tokenType"], "Bearer");
    assert_eq!(tokens["expiresIn"], 900);
    let access = tokens["accessToken"].as_str().unwrap().to_string();
    let refresh = tokens["refreshToken"].as_str().unwrap().to_string();

    let (status, me) = get(&platform, "/v1/users/me", Some(&access)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["displayName"], "Ada Lovelace");

    let response = platform
        .client
        .patch(platform.url("/v1/users/me"))
        .bearer_auth(&access)
        .json(&json!({"timeZone": "Europe/Lisbon", "locale": "pt-PT"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_eq!(updated["timeZone"], "Europe/Lisbon");
    assert_eq!(updated["displayName"], "Ada Lovelace", "absent fields stay");

    // Refresh rotates: a new pair, and the old refresh token is spent.
    let (status, rotated) = post(
        &platform,
        "/v1/auth/refresh",
        json!({"refreshToken": refresh}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let second_refresh = rotated["refreshToken"].as_str().unwrap().to_string();
    assert_ne!(second_refresh, refresh);
    // GetMe answers are cached: the change shows at once all the same.
    let (status, me) = get(&platform, "/v1/users/me", rotated["accessToken"].as_str()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["timeZone"], "Europe/Lisbon", "{me}");

    // Presenting the spent token again is reuse: 401, and the whole family is revoked, so
    // even the newest token of the family stops working.
    let (status, problem) = post(
        &platform,
        "/v1/auth/refresh",
        json!({"refreshToken": refresh}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["reason"], "REFRESH_TOKEN_REUSED");
    let (status, problem) = post(
        &platform,
        "/v1/auth/refresh",
        json!({"refreshToken": second_refresh}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["reason"], "REFRESH_TOKEN_INVALID");

    // A fresh session, logged out, cannot refresh.
    let (_, tokens) = post(
        &platform,
        "/v1/auth/login",
        json!({"email": "ada@example.com", "password": PASSWORD}),
    )
    .await;
    let refresh = tokens["refreshToken"].as_str().unwrap();
    let (status, _) = post(
        &platform,
        "/v1/auth/logout",
        json!({"refreshToken": refresh}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post(
        &platform,
        "/v1/auth/refresh",
        json!({"refreshToken": refresh}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    platform.stop().await;
}

#[tokio::test]
async fn wrong_password_and_unknown_email_get_the_same_answer() {
    let platform = TestPlatform::start().await;
    register_and_login(&platform, "grace@example.com").await;
    let (status_wrong, wrong) = post(
        &platform,
        "/v1/auth/login",
        json!({"email": "grace@example.com", "password": "not-the-password"}),
    )
    .await;
    let (status_unknown, unknown) = post(
        &platform,
        "/v1/auth/login",
        json!({"email": "nobody@example.com", "password": "not-the-password"}),
    )
    .await;
    assert_eq!(status_wrong, StatusCode::UNAUTHORIZED);
    assert_eq!(status_unknown, StatusCode::UNAUTHORIZED);
    for body in [&wrong, &unknown] {
        assert_eq!(body["reason"], "INVALID_CREDENTIALS");
        assert_eq!(body["detail"], "the email or password is wrong");
    }
    platform.stop().await;
}

#[tokio::test]
async fn the_password_policy_reports_field_violations() {
    let platform = TestPlatform::start().await;
    let (status, problem) = post(
        &platform,
        "/v1/auth/register",
        json!({"email": "not-an-email", "password": "short", "displayName": ""}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["code"], "INVALID_ARGUMENT");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, vec!["email", "password", "display_name"]);

    let (status, problem) = post(
        &platform,
        "/v1/auth/register",
        json!({"email": "sam@example.com", "password": "SAM@example.com", "displayName": "Sam"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        problem["errors"][0]["description"],
        "must not be the email address"
    );
    platform.stop().await;
}

#[tokio::test]
async fn bad_requests_get_problem_details() {
    let platform = TestPlatform::start().await;
    let tokens = register_and_login(&platform, "linus@example.com").await;
    let access = tokens["accessToken"].as_str().unwrap();

    let send = |body: Vec<u8>, content_type: &'static str| {
        platform
            .client
            .post(platform.url("/v1/auth/login"))
            .header("content-type", content_type)
            .header("x-request-id", "test-request-42")
            .body(body)
            .send()
    };
    let check = |response: reqwest::Response, expected: StatusCode| async move {
        assert_eq!(response.status(), expected);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        assert_eq!(response.headers()["x-request-id"], "test-request-42");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], expected.as_u16());
        assert_eq!(body["requestId"], "test-request-42");
        body
    };

    let malformed = check(
        send(b"{\"email\": ".to_vec(), "application/json")
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(malformed["reason"], "MALFORMED_JSON");

    let unknown = check(
        send(
            br#"{"email":"a@b.co","password":"x","isAdmin":true}"#.to_vec(),
            "application/json",
        )
        .await
        .unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        unknown["detail"].as_str().unwrap().contains("isAdmin"),
        "{unknown}"
    );

    let oversize = format!(r#"{{"email":"{}"}}"#, "a".repeat(2 * 1024 * 1024));
    let too_large = check(
        send(oversize.into_bytes(), "application/json")
            .await
            .unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert_eq!(too_large["reason"], "PAYLOAD_TOO_LARGE");

    let form = check(
        send(b"email=a".to_vec(), "application/x-www-form-urlencoded")
            .await
            .unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    assert_eq!(form["reason"], "UNSUPPORTED_MEDIA_TYPE");

    // Missing, tampered and malformed tokens.
    let (status, problem) = get(&platform, "/v1/users/me", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["reason"], "TOKEN_MISSING");
    // Escalate the role in the payload and keep the original signature.
    let parts: Vec<&str> = access.split('.').collect();
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(parts[1]).unwrap())
        .unwrap()
        .replace("\"learner\"", "\"admin\"");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(payload.as_bytes()),
        parts[2]
    );
    let (status, problem) = get(&platform, "/v1/users/me", Some(&tampered)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["reason"], "TOKEN_SIGNATURE");
    let (status, problem) = get(&platform, "/v1/users/me", Some("not-a-jwt")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["reason"], "TOKEN_MALFORMED");

    // Routing errors are problems too.
    let (status, problem) = get(&platform, "/v1/nowhere", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["reason"], "ROUTE_NOT_FOUND");
    let response = platform
        .client
        .delete(platform.url("/v1/users/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        response.headers()["allow"]
            .to_str()
            .unwrap()
            .contains("GET")
    );

    // Query parameters are checked against the request message.
    let (status, problem) = get(&platform, "/v1/users/me?colour=blue", Some(access)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["reason"], "UNKNOWN_PARAMETER");
    platform.stop().await;
}

#[tokio::test]
async fn admins_manage_users_and_learners_may_not() {
    let admin_email = "root@example.com";
    let platform = TestPlatform::start_with(
        duovarsity::Component::All,
        &[
            ("DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL", admin_email),
            ("DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD", PASSWORD),
        ],
    )
    .await;
    let (status, admin) = post(
        &platform,
        "/v1/auth/login",
        json!({"email": admin_email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{admin}");
    assert_eq!(admin["user"]["role"], "ROLE_ADMIN");
    let admin_token = admin["accessToken"].as_str().unwrap().to_string();

    let learner = register_and_login(&platform, "learner1@example.com").await;
    let learner_id = learner["user"]["id"].as_str().unwrap().to_string();
    let learner_token = learner["accessToken"].as_str().unwrap().to_string();
    for i in 2..=5 {
        register_and_login(&platform, &format!("learner{i}@example.com")).await;
    }

    // Learners are refused admin methods.
    let (status, problem) = get(
        &platform,
        &format!("/v1/users/{learner_id}"),
        Some(&learner_token),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(problem["reason"], "ROLE_REQUIRED");

    // Keyset pagination visits every account once, in creation order.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let (status, page) = get(
            &platform,
            &format!("/v1/users?pageSize=2&pageToken={token}"),
            Some(&admin_token),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for user in page["users"].as_array().unwrap() {
            seen.push(user["email"].as_str().unwrap().to_string());
        }
        token = page["nextPageToken"].as_str().unwrap().to_string();
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 6);
    assert_eq!(seen[0], admin_email);
    assert_eq!(seen[5], "learner5@example.com");
    let (status, problem) = get(&platform, "/v1/users?pageSize=500", Some(&admin_token)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(problem["errors"][0]["field"], "page_size");

    // Role and tier changes show in the next token.
    let (status, user) = post_auth(
        &platform,
        &format!("/v1/users/{learner_id}:setRole"),
        &admin_token,
        json!({"role": "ROLE_INSTRUCTOR"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["role"], "ROLE_INSTRUCTOR");
    let (status, user) = post_auth(
        &platform,
        &format!("/v1/users/{learner_id}:setTier"),
        &admin_token,
        json!({"tier": "TIER_PREMIUM"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{user}");
    assert_eq!(user["tier"], "TIER_PREMIUM");
    let (status, relogged) = post(
        &platform,
        "/v1/auth/login",
        json!({"email": "learner1@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(relogged["user"]["role"], "ROLE_INSTRUCTOR");

    let (status, _) = post_auth(
        &platform,
        &format!("/v1/users/{learner_id}:setRole"),
        &admin_token,
        json!({"role": "ROLE_WIZARD"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, problem) = get(
        &platform,
        "/v1/users/01900000-0000-7000-8000-000000000000",
        Some(&admin_token),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");

    platform.stop().await;
}

async fn post_auth(
    platform: &TestPlatform,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    platform
        .call(Method::POST, path, Some(token), Some(body))
        .await
}

#[tokio::test]
async fn jwks_openapi_and_health_are_served() {
    let platform = TestPlatform::start().await;
    let (status, jwks) = get(&platform, "/.well-known/jwks.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");

    let (status, openapi) = get(&platform, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(openapi["openapi"], "3.1.0");
    // A standard validator accepts the document (installed by scripts/test-deps.sh).
    let file = platform.data_dir().join("openapi.json");
    std::fs::write(&file, openapi.to_string()).unwrap();
    let checked = std::process::Command::new("openapi-spec-validator")
        .arg(&file)
        .output()
        .expect("openapi-spec-validator is installed (scripts/test-deps.sh)");
    assert!(
        checked.status.success(),
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    for path in [
        "/v1/auth/register",
        "/v1/auth/login",
        "/v1/auth/refresh",
        "/v1/auth/logout",
        "/v1/users/me",
        "/v1/users/{id}",
        "/v1/users",
        "/.well-known/jwks.json",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "{path} is documented");
    }

    let (status, _) = get(&platform, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = get(&platform, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = platform.metrics().await;
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    platform.stop().await;
}

/// The distributed shape: the user service and the gateway as separate servers talking
/// gRPC over TCP, on PostgreSQL.
#[tokio::test]
async fn gateway_and_user_service_apart_on_postgres() {
    let database = duovarsity_testkit::TempPostgres::create().await;
    let user = TestPlatform::start_with(
        duovarsity::Component::Service("user"),
        &[("DUOVARSITY_DATABASE_URL", &database.url)],
    )
    .await;
    let user_url = format!("http://{}", user.grpc_addr());
    let gateway = TestPlatform::start_with(
        duovarsity::Component::Gateway,
        &[("DUOVARSITY_USER_SERVICE_URL", &user_url)],
    )
    .await;

    let tokens = register_and_login(&gateway, "distributed@example.com").await;
    let (status, me) = get(&gateway, "/v1/users/me", tokens["accessToken"].as_str()).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["email"], "distributed@example.com");
    let (status, rotated) = post(
        &gateway,
        "/v1/auth/refresh",
        json!({"refreshToken": tokens["refreshToken"]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");

    // With the user service gone, the gateway answers 503 with retry advice, and is not ready.
    user.stop().await;
    let response = gateway
        .client
        .post(gateway.url("/v1/auth/login"))
        .json(&json!({"email": "distributed@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    // The gateway itself stays ready (it knows the keys; other routes work), and its
    // status names the upstream that is down.
    let (status, _) = get(&gateway, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    let (_, report) = gateway.admin("/status").await;
    assert_ne!(
        report["upstreams"]["duovarsity.user.v1.UserService"], "SERVING",
        "{report}"
    );

    gateway.stop().await;
    database.drop_database().await;
}

#[tokio::test]
async fn cors_follows_configuration() {
    let platform = TestPlatform::start_with(
        duovarsity::Component::All,
        &[("DUOVARSITY_CORS_ALLOWED_ORIGINS", "https://app.example")],
    )
    .await;
    let preflight = |origin: &'static str| {
        platform
            .client
            .request(reqwest::Method::OPTIONS, platform.url("/v1/users/me"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    platform.stop().await;
}

/// Key rotation and revocation without restarts: two user replicas share a key directory
/// and a gateway balances over them. A key added to the directory signs new tokens; once
/// the old key's file is removed, every replica stops publishing it and the gateway
/// refuses the tokens it signed within the JWKS refresh period, even one it had verified
/// and remembered, while tokens of the remaining key keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_signing_key_stops_verifying_without_a_restart() {
    use duovarsity_common::auth::KeyRing;

    let database = duovarsity_testkit::TempPostgres::create().await;
    let keys = tempfile::tempdir().unwrap();
    let old_kid = KeyRing::rotate(keys.path()).unwrap();
    let keys_dir = keys.path().display().to_string();
    let replica = || {
        let settings = [
            ("DUOVARSITY_DATABASE_URL", database.url.as_str()),
            ("DUOVARSITY_JWT_KEYS_DIR", keys_dir.as_str()),
            ("DUOVARSITY_JWT_GENERATE_KEYS", "false"),
            ("DUOVARSITY_JWKS_REFRESH_SECS", "1"),
        ];
        async move { TestPlatform::start_with(duovarsity::Component::Service("user"), &settings).await }
    };
    let (a, b) = (replica().await, replica().await);
    let both = format!("http://{},http://{}", a.grpc_addr(), b.grpc_addr());
    let gateway = TestPlatform::start_with(
        duovarsity::Component::Gateway,
        &[
            ("DUOVARSITY_USER_SERVICE_URL", &both),
            ("DUOVARSITY_JWKS_REFRESH_SECS", "1"),
        ],
    )
    .await;
    let old = register_and_login(&gateway, "rotated@example.com").await["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = get(&gateway, "/v1/users/me", Some(&old)).await;
    assert_eq!(status, StatusCode::OK);

    // A new key: the replicas pick it up from the directory and sign with it.
    let new_kid = KeyRing::rotate(keys.path()).unwrap();
    let kid_of = |token: &str| {
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        serde_json::from_slice::<Value>(&header).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut new = String::new();
    for _ in 0..50 {
        let (_, tokens) = post(
            &gateway,
            "/v1/auth/login",
            json!({"email": "rotated@example.com", "password": PASSWORD}),
        )
        .await;
        new = tokens["accessToken"].as_str().unwrap().to_string();
        if kid_of(&new) == new_kid {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(kid_of(&new), new_kid, "the replicas sign with the new key");
    assert_eq!(kid_of(&old), old_kid);

    // The old key is revoked: its file goes. Its tokens are refused within the period.
    std::fs::remove_file(keys.path().join(format!("{old_kid}.pem"))).unwrap();
    let started = std::time::Instant::now();
    loop {
        let (status, problem) = get(&gateway, "/v1/users/me", Some(&old)).await;
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(problem["reason"], "TOKEN_UNKNOWN_KEY", "{problem}");
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "a token of the removed key still verifies"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The new key's tokens verify everywhere once every replica has read the directory:
    // each does within a second of its own clock, and the replica that signed `new` may
    // have been the first (the gateway can refuse the old key before the other replica
    // has taken the new one).
    let started = std::time::Instant::now();
    loop {
        let (status, problem) = get(&gateway, "/v1/users/me", Some(&new)).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "a token of the new key is still refused: {status} {problem}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Every replica publishes only the remaining key once it has seen the directory change
    // (each checks it every second on its own clock, so the one the gateway asked may have
    // been first).
    for replica in [&a, &b] {
        let mut client = duovarsity_proto::user::user_service_client::UserServiceClient::connect(
            format!("http://{}", replica.grpc_addr()),
        )
        .await
        .unwrap();
        let started = std::time::Instant::now();
        loop {
            let jwks = client
                .get_jwks(duovarsity_proto::user::GetJwksRequest {})
                .await
                .unwrap()
                .into_inner();
            let kids: Vec<String> = jwks.keys.into_iter().map(|k| k.kid).collect();
            if kids == vec![new_kid.clone()] {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(5),
                "replica {} still publishes {kids:?}",
                replica.grpc_addr()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    gateway.stop().await;
    a.stop().await;
    b.stop().await;
    database.drop_database().await;
}
