//! Live delivery at scale against a running platform: opens many idle WebSocket
//! connections of one learner through the gateway, reads the server's resident memory
//! before and after (memory per idle connection), then records lesson progress a few
//! times and measures how long each change takes to reach every connection (fan-out
//! latency, from the REST call to each socket's frame).
//!
//! ```text
//! cargo run --release -p duovarsity-load --bin ws_bench -- \
//!     --base http://127.0.0.1:18082 --pid <server pid> [--connections 10000] [--rounds 5]
//! ```
//! The platform must hold the demo catalog (`duovarsity seed --demo`); `scripts/bench-live.sh`
//! starts one and runs this.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Idle WebSockets of one learner, memory per connection, and fan-out latency.
#[derive(clap::Parser)]
struct Args {
    /// The gateway of the running platform.
    #[arg(long, default_value = "http://127.0.0.1:18082")]
    base: String,
    /// The server's process id (its memory is read from /proc).
    #[arg(long)]
    pid: u32,
    /// How many WebSockets to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// How many progress changes to fan out.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// The server's resident set, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server runs");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS")
}

async fn call(
    http: &reqwest13::Client,
    method: reqwest13::Method,
    url: String,
    token: Option<&str>,
    body: Value,
) -> Value {
    let mut request = http.request(method, url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the gateway answers");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {body}");
    body
}

async fn get(http: &reqwest13::Client, url: String) -> Value {
    http.get(url)
        .send()
        .await
        .expect("the gateway answers")
        .json()
        .await
        .expect("a JSON answer")
}

/// The server's CPU time (user and system), in seconds, from /proc (clock ticks of 1/100 s,
/// Linux's USER_HZ).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server runs");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("comm ends with )")
        .1
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields[i].parse::<f64>().expect("ticks");
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let http = reqwest13::Client::new();
    let base = args.base.clone();

    // One learner, enrolled in a free demo course with a lesson.
    let email = format!("bench-{}@example.com", uuid::Uuid::now_v7().simple());
    let password = "correct horse battery staple";
    call(
        &http,
        reqwest13::Method::POST,
        format!("{base}/v1/auth/register"),
        None,
        json!({"email": email, "password": password, "displayName": "Bench"}),
    )
    .await;
    let tokens = call(
        &http,
        reqwest13::Method::POST,
        format!("{base}/v1/auth/login"),
        None,
        json!({"email": email, "password": password}),
    )
    .await;
    let token = tokens["accessToken"].as_str().unwrap().to_string();
    let courses = get(&http, format!("{base}/v1/courses?pageSize=100")).await;
    let course = courses["courses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["price"].is_null())
        .expect("a free demo course (run `duovarsity seed --demo`)");
    let course_id = course["id"].as_str().unwrap().to_string();
    let outline = get(&http, format!("{base}/v1/courses/{course_id}")).await;
    let lesson_id = outline["sections"][0]["lessons"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    call(
        &http,
        reqwest13::Method::POST,
        format!("{base}/v1/courses/{course_id}/enrollments"),
        Some(&token),
        json!({}),
    )
    .await;

    let before = rss_kib(args.pid);
    let ws_url = format!(
        "{}/v1/ws?access_token={token}",
        base.replacen("http://", "ws://", 1)
    );
    let (arrivals, mut arrived) = mpsc::unbounded_channel::<(i64, Instant)>();
    let opening = Instant::now();
    let mut connected = 0;
    // Connect in waves of 200 so the listener's backlog is never the limit.
    while connected < args.connections {
        let wave = (args.connections - connected).min(200);
        let mut handshakes = Vec::with_capacity(wave);
        for _ in 0..wave {
            let url = ws_url.clone();
            handshakes.push(tokio::spawn(async move {
                tokio_tungstenite::connect_async(url).await
            }));
        }
        for handshake in handshakes {
            let (socket, _) = handshake.await.unwrap().expect("the upgrade succeeds");
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                let (_, mut frames) = socket.split();
                while let Some(Ok(message)) = frames.next().await {
                    if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                        let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        if let Some(percent) = frame["progress"]["percent"].as_i64() {
                            let _ = arrivals.send((percent, Instant::now()));
                        }
                    }
                }
            });
        }
        connected += wave;
    }
    let opened = opening.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(args.pid);
    println!(
        "{} idle WebSocket connections opened in {:.1} s; server RSS {:.1} MiB -> {:.1} MiB: {:.1} KiB per connection",
        args.connections,
        opened.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / args.connections as f64,
    );

    let mut all = Vec::new();
    let cpu_before = cpu_seconds(args.pid);
    for round in 0..args.rounds {
        let percent = 10 * (round as i64 + 1);
        let started = Instant::now();
        call(
            &http,
            reqwest13::Method::PUT,
            format!("{base}/v1/lessons/{lesson_id}/progress"),
            Some(&token),
            json!({"percent": percent}),
        )
        .await;
        let mut latencies = Vec::with_capacity(args.connections);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while latencies.len() < args.connections {
            match tokio::time::timeout_at(deadline, arrived.recv()).await {
                Ok(Some((seen, at))) if seen == percent => latencies.push(at - started),
                Ok(Some(_)) => {}
                _ => panic!(
                    "round {round}: {} of {} connections heard within 60 s",
                    latencies.len(),
                    args.connections
                ),
            }
        }
        latencies.sort_unstable();
        println!(
            "fan-out {round}: one progress change to {} connections: p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms",
            args.connections,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
        );
        all.extend(latencies);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu = cpu_seconds(args.pid) - cpu_before;
    println!(
        "server CPU during the fan-outs: {cpu:.2} s, {:.1} us per delivered frame",
        cpu * 1e6 / all.len() as f64
    );
    all.sort_unstable();
    println!(
        "all {} deliveries: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server RSS now {:.1} MiB",
        all.len(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
        rss_kib(args.pid) as f64 / 1024.0,
    );
}
