//! The `duovarsity` binary as an operator runs it: a bad setting stops it with status 2 and
//! names the variable; SIGTERM stops a running platform cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn duovarsity() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_duovarsity"));
    // Only what the test sets: no DUOVARSITY_* from the caller's environment.
    for (key, _) in std::env::vars() {
        if key.starts_with("DUOVARSITY_") {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn a_bad_setting_exits_with_status_2_and_names_the_variable() {
    let output = duovarsity()
        .env("DUOVARSITY_HTTP_ADDR", "not-an-address")
        .arg("up")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DUOVARSITY_HTTP_ADDR"), "{stderr}");

    let output = duovarsity()
        .env("DUOVARSITY_BODY_LIMT_BYTES", "10")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("body_limt_bytes"));
}

#[test]
fn help_describes_every_command() {
    let output = duovarsity().arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["up", "serve", "migrate", "seed", "admin", "keys"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}

#[test]
fn sigterm_stops_the_platform_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let mut child = duovarsity()
        .env("DUOVARSITY_DATA_DIR", data.path())
        .env("DUOVARSITY_HTTP_ADDR", "127.0.0.1:0")
        .env("DUOVARSITY_GRPC_ADDR", "127.0.0.1:0")
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The platform prints its URLs once it listens.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let started = Instant::now();
    while !line.contains("REST gateway") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the platform exited before listening"
        );
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_help_lists_every_service_of_the_module_table() {
    let output = duovarsity().args(["serve", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for name in duovarsity::module_names().into_iter().chain(["gateway"]) {
        assert!(help.contains(name), "{name} missing from:\n{help}");
    }
    let output = duovarsity().args(["serve", "billing"]).output().unwrap();
    assert!(!output.status.success());
}

/// `duovarsity migrate` on an empty PostgreSQL database creates every service's tables:
/// it reports each service, a second run changes nothing, and then every service starts
/// with migrations turned off and serves real traffic on that schema.
#[tokio::test]
async fn migrate_creates_every_service_schema_on_an_empty_postgres_database() {
    use duovarsity_testkit::{TEST_ADMIN, TempPostgres, TestPlatform};
    use reqwest::{Method, StatusCode};

    let database = TempPostgres::create().await;
    let url = database.url.clone();
    let migrate = |args: &'static [&'static str]| {
        let output = duovarsity()
            .env("DUOVARSITY_DATABASE_URL", &url)
            .arg("migrate")
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let off = [
        ("DUOVARSITY_DATABASE_URL", url.as_str()),
        ("DUOVARSITY_MIGRATE_ON_START", "false"),
    ];

    // Before any migration a service with migrations off refuses to start, and says why.
    let config = duovarsity_common::Config::from_sources(
        None,
        &off.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
    .unwrap();
    let refused = duovarsity::Platform::start(config, duovarsity::Component::Service("course"))
        .await
        .err()
        .expect("an unmigrated schema is refused");
    assert!(
        format!("{refused:#}").contains("duovarsity migrate"),
        "{refused:#}"
    );

    let first = migrate(&[]);
    for name in duovarsity::module_names() {
        assert!(
            first.contains(&format!("{name}: applied ")),
            "{name} missing from:\n{first}"
        );
    }
    let again = migrate(&[]);
    for name in duovarsity::module_names() {
        assert!(again.contains(&format!("{name}: up to date")), "{again}");
    }
    assert_eq!(migrate(&["--service", "user"]).trim(), "user: up to date");

    // Each service alone, migrations off: its schema check passes and it starts.
    for name in duovarsity::module_names() {
        let service = TestPlatform::start_with(duovarsity::Component::Service(name), &off).await;
        service.stop().await;
    }

    // The whole platform on that schema, migrations off: every service's tables work.
    let mut settings = off.to_vec();
    settings.push(("DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL", TEST_ADMIN));
    settings.push((
        "DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD",
        duovarsity_testkit::TEST_PASSWORD,
    ));
    let p = TestPlatform::start_with(duovarsity::Component::All, &settings).await;
    let (_, admin) = p.sign_in(TEST_ADMIN).await;
    let (course_id, lesson_id) = p.course_with_lesson(&admin, "migrated").await;
    let (status, draft) = p
        .call(
            Method::PUT,
            &format!("/v1/lessons/{lesson_id}/draft"),
            Some(&admin),
            Some(serde_json::json!({"markdown": "# On a migrated schema"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{draft}");
    p.publish(&admin, &course_id).await;
    let (_, learner) = p.sign_up("migrated@example.com").await;
    p.enroll(&learner, &course_id).await;
    let mut inbox = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, body) = p
            .call(Method::GET, "/v1/notifications", Some(&learner), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        inbox = body;
        if inbox["notifications"].as_array().map_or(0, Vec::len) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        inbox["notifications"].as_array().map_or(0, Vec::len),
        2,
        "a welcome and an enrollment: {inbox}"
    );
    p.stop().await;
    database.drop_database().await;
}
