//! The `duovarsity` binary as an operator runs it: a bad setting stops it with status 2 and
//! names the variable; SIGTERM stops a running platform cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod crash;
mod failover;
mod traces;

fn duovarsity() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_duovarsity"));
    // Only what the test sets: no DUOVARSITY_* from the caller's environment.
    for (key, _) in std::env::vars() {
        if key.starts_with("DUOVARSITY_") {
            command.env_remove(key);
        }
    }
    // Processes of parallel tests must not contend for the default admin port.
    command.env("DUOVARSITY_ADMIN_ADDR", "127.0.0.1:0");
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
    // Started once it announces its URLs (and stdout closed: the announcement only informs).
    let (mut child, _) = start_up(data.path());
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
        ("DUOVARSITY_ADMIN_ADDR", "127.0.0.1:0"),
    ];

    // Before any migration a service with migrations off refuses to start, and says why.
    let config = duovarsity_config::Config::from_sources(
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

#[tokio::test]
async fn bulk_learners_sign_in_and_are_welcomed_like_any_account() {
    use duovarsity::seed::{LEARNER_PASSWORD, learner_email};
    let data = tempfile::tempdir().unwrap();
    let seed = |count: &str| {
        let output = duovarsity()
            .env("DUOVARSITY_DATA_DIR", data.path())
            .args(["seed", "--learners", count])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(seed("300").starts_with("300 new learners (0 existed)"));
    // Seeding again adds only the missing ones.
    assert!(seed("310").starts_with("10 new learners (300 existed)"));

    let (mut child, base) = start_up(data.path());
    let api = duovarsity_testkit::Api::new(&base);
    for i in [0, 299, 309] {
        let body = serde_json::json!({"email": learner_email(i), "password": LEARNER_PASSWORD});
        let (status, tokens) = api
            .call(reqwest::Method::POST, "/v1/auth/login", None, Some(body))
            .await;
        assert!(status.is_success(), "learner {i}: {status} {tokens}");
        // The accounts' events went out: the notification service welcomed each once.
        let token = tokens["accessToken"].as_str().unwrap();
        let started = Instant::now();
        loop {
            let (_, inbox) = api
                .call(reqwest::Method::GET, "/v1/notifications", Some(token), None)
                .await;
            let welcomes = inbox["notifications"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| n["title"] == "Welcome to Duovarsity")
                .count();
            if welcomes == 1 {
                break;
            }
            assert!(
                welcomes == 0 && started.elapsed() < Duration::from_secs(20),
                "learner {i}: {inbox}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let wrong = serde_json::json!({"email": learner_email(310), "password": LEARNER_PASSWORD});
    let (status, _) = api
        .call(reqwest::Method::POST, "/v1/auth/login", None, Some(wrong))
        .await;
    assert_eq!(status.as_u16(), 401, "only 0..310 exist");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `duovarsity up` as a child process on `data`, with the bootstrap admin; its gateway's
/// base URL once it listens.
fn start_up(data: &std::path::Path) -> (std::process::Child, String) {
    // Every start appends to one log, shown when a start fails.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data.join("platform.log"))
        .unwrap();
    let mut child = duovarsity()
        .env("DUOVARSITY_DATA_DIR", data)
        .env("DUOVARSITY_HTTP_ADDR", "127.0.0.1:0")
        .env("DUOVARSITY_GRPC_ADDR", "127.0.0.1:0")
        .env(
            "DUOVARSITY_BOOTSTRAP_ADMIN_EMAIL",
            duovarsity_testkit::TEST_ADMIN,
        )
        .env(
            "DUOVARSITY_BOOTSTRAP_ADMIN_PASSWORD",
            duovarsity_testkit::TEST_PASSWORD,
        )
        .arg("up")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let started = Instant::now();
    while !line.contains("REST gateway") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the platform exited before listening; its log:\n{}",
            std::fs::read_to_string(data.join("platform.log")).unwrap_or_default()
        );
        assert!(started.elapsed() < Duration::from_secs(30));
    }
    let base = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .unwrap()
        .to_string();
    (child, base)
}

/// A `duovarsity serve` child, killed when dropped, with its log file.
pub struct Served {
    pub child: Child,
    pub log: std::path::PathBuf,
    pub grpc: Option<String>,
    pub http: Option<String>,
    pub admin: Option<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `duovarsity serve <component>` as `name` (its directory under `data`), exporting JSON
/// logs and traces as the environment says, once it announces its addresses.
pub fn serve(
    name: &str,
    component: &str,
    data: &std::path::Path,
    env: &[(&str, String)],
) -> Served {
    let dir = data.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log.jsonl");
    let mut command = duovarsity();
    command
        .env("DUOVARSITY_DATA_DIR", &dir)
        .env("DUOVARSITY_HTTP_ADDR", "127.0.0.1:0")
        .env("DUOVARSITY_GRPC_ADDR", "127.0.0.1:0")
        .env("DUOVARSITY_LOG_FORMAT", "json")
        .env("POD_NAME", format!("{name}-0"))
        .env("RUST_LOG", "info,duovarsity_common=debug")
        // Export within a fraction of a second rather than the default 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .args(["serve", component])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut grpc, mut http, mut admin) = (None, None, None);
    let started = Instant::now();
    let mut line = String::new();
    while !line.contains("Press Ctrl-C") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "{component} exited before listening; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(started.elapsed() < Duration::from_secs(60));
        let url = line
            .split_whitespace()
            .find(|word| word.starts_with("http://") || word.contains("127.0.0.1:"))
            .map(|word| word.trim_start_matches("http://").to_string());
        if line.starts_with("gRPC") {
            grpc = url.map(|addr| format!("http://{addr}"));
        } else if line.starts_with("REST") {
            http = url.map(|addr| format!("http://{addr}"));
        } else if line.starts_with("Admin") {
            admin = url.map(|addr| format!("http://{addr}"));
        }
    }
    Served {
        child,
        log,
        grpc,
        http,
        admin,
    }
}
