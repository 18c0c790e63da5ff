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
