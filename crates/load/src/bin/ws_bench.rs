//! Live fan-out against a running server: the platform's `/v1/ws` or the bare baseline
//! (`gateway/examples/bare_ws.rs`), with the same sockets and the same frames.
//!
//! Each socket follows two rooms: room 0, which every socket is in, and one of `--rooms`
//! more (socket i is in room 1 + i % rooms). The run reports:
//! - memory per idle socket (the server's RSS before and after opening them);
//! - fan-out: one message to room 0 reaches every socket (latency from the send of the
//!   publishing request to each socket's frame), `--rounds` times;
//! - throughput: for `--seconds`, messages to the small rooms round-robin, from
//!   `--publishers` concurrent publishers; frames delivered per second, and the server's
//!   CPU per delivered frame.
//!
//! On the platform the learner is one account (the per-user cap lifted by the script)
//! enrolled in every room's course, with in-app notifications of the learning category
//! off so that each announcement reaches the sockets once, through the room; the
//! announcements are posted by the bootstrap admin.
//!
//! ```text
//! ws_bench --target platform --base http://127.0.0.1:18082 --pid <pid> --admin-email ... --admin-password ...
//! ws_bench --target bare --base http://127.0.0.1:18090 --pid <pid>
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Target {
    Platform,
    Bare,
}

#[derive(clap::Parser)]
struct Args {
    #[arg(long, value_enum)]
    target: Target,
    /// The server's HTTP base URL.
    #[arg(long)]
    base: String,
    /// The server's process id (its memory and CPU are read from /proc).
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Small rooms (besides room 0, which every socket is in).
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// How long the throughput phase lasts (0: skip it).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 8)]
    publishers: usize,
    /// The platform's bootstrap admin, who creates the rooms' courses and announces.
    #[arg(long, default_value = "bench-admin@example.com")]
    admin_email: String,
    #[arg(long, default_value = "bench-admin-password-2026")]
    admin_password: String,
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server runs");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS")
}

/// The server's CPU time (user and system), in seconds (Linux's USER_HZ of 100).
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

async fn call(
    http: &reqwest13::Client,
    method: reqwest13::Method,
    url: String,
    token: Option<&str>,
    body: Value,
) -> Value {
    let mut request = http.request(method, &url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status}: {body}");
    body
}

async fn login(http: &reqwest13::Client, base: &str, email: &str, password: &str) -> String {
    let tokens = call(
        http,
        reqwest13::Method::POST,
        format!("{base}/v1/auth/login"),
        None,
        json!({"email": email, "password": password}),
    )
    .await;
    tokens["accessToken"].as_str().unwrap().to_string()
}

/// Where the sockets connect and what they subscribe to, and how a message is sent.
struct Setup {
    ws_url: String,
    topics: Vec<String>,
    course_ids: Vec<String>,
    admin: String,
}

/// On the platform: rooms' courses (free, published, one lesson each), one learner
/// enrolled in all of them.
async fn platform(http: &reqwest13::Client, args: &Args) -> Setup {
    let base = &args.base;
    let admin = login(http, base, &args.admin_email, &args.admin_password).await;
    let email = format!("ws-bench-{}@example.com", uuid::Uuid::now_v7().simple());
    let password = "correct horse battery staple";
    call(
        http,
        reqwest13::Method::POST,
        format!("{base}/v1/auth/register"),
        None,
        json!({"email": email, "password": password, "displayName": "Bench"}),
    )
    .await;
    let learner = login(http, base, &email, password).await;
    // The announcements reach the sockets through the room; the inbox copy would reach
    // every socket of this one learner a second time.
    call(
        http,
        reqwest13::Method::PUT,
        format!("{base}/v1/me/notification-preferences"),
        Some(&learner),
        json!({"channels": [{"category": "CATEGORY_LEARNING", "inApp": false, "email": false}]}),
    )
    .await;
    let mut course_ids = Vec::new();
    let run = uuid::Uuid::now_v7().simple().to_string();
    for n in 0..=args.rooms {
        let post = |path: String, body: Value| {
            call(
                http,
                reqwest13::Method::POST,
                format!("{base}{path}"),
                Some(&admin),
                body,
            )
        };
        let course = post(
            "/v1/courses".into(),
            json!({"slug": format!("room-{run}-{n}"), "title": format!("Room {n}"), "level": "LEVEL_BEGINNER", "language": "en"}),
        )
        .await;
        let id = course["id"].as_str().unwrap().to_string();
        let section = post(format!("/v1/courses/{id}/sections"), json!({"title": "S"})).await;
        let section_id = section["id"].as_str().unwrap();
        post(
            format!("/v1/sections/{section_id}/lessons"),
            json!({"title": "L", "kind": "LESSON_KIND_TEXT"}),
        )
        .await;
        post(format!("/v1/courses/{id}:publish"), json!({})).await;
        call(
            http,
            reqwest13::Method::POST,
            format!("{base}/v1/courses/{id}/enrollments"),
            Some(&learner),
            json!({}),
        )
        .await;
        course_ids.push(id);
    }
    Setup {
        // Past every notification: the sockets replay nothing.
        ws_url: format!(
            "{}/v1/ws?access_token={learner}&after=1000000000",
            base.replacen("http://", "ws://", 1)
        ),
        topics: course_ids.iter().map(|id| format!("course:{id}")).collect(),
        course_ids,
        admin,
    }
}

fn bare(args: &Args) -> Setup {
    Setup {
        ws_url: format!("{}/ws", args.base.replacen("http://", "ws://", 1)),
        topics: (0..=args.rooms)
            .map(|n| format!("course:room-{n}"))
            .collect(),
        course_ids: Vec::new(),
        admin: String::new(),
    }
}

/// Sends message `title` to room `room`: an announcement on the platform; on the bare
/// server, a frame of the same shape and size.
async fn publish(http: &reqwest13::Client, args: &Args, setup: &Setup, room: usize, title: &str) {
    let body = "Meet in the room at five; bring your questions about the last lesson.";
    match args.target {
        Target::Platform => {
            let course = &setup.course_ids[room];
            call(
                http,
                reqwest13::Method::POST,
                format!("{}/v1/courses/{course}/announcements", args.base),
                Some(&setup.admin),
                json!({"title": title, "body": body}),
            )
            .await;
        }
        Target::Bare => {
            let topic = &setup.topics[room];
            let frame = json!({"topic": topic, "announcement": {
                "id": uuid::Uuid::now_v7().to_string(), "courseId": topic, "seq": "1",
                "authorId": uuid::Uuid::now_v7().to_string(), "title": title, "body": body,
                "createdAt": "2026-12-08T00:00:00.000Z"}});
            // Topics are `course:room-<n>`: nothing to escape in a query string.
            let response = http
                .post(format!("{}/publish?topic={topic}", args.base))
                .body(frame.to_string())
                .send()
                .await
                .expect("the bare server answers");
            assert!(response.status().is_success());
        }
    }
}

#[tokio::main]
async fn main() {
    let args = <Args as clap::Parser>::parse();
    let pid = args.pid;
    let http = reqwest13::Client::new();
    let setup = match args.target {
        Target::Platform => platform(&http, &args).await,
        Target::Bare => bare(&args),
    };
    let name = match args.target {
        Target::Platform => "platform",
        Target::Bare => "bare",
    };

    // Arrivals of the fan-out rounds' messages (title `round <n>`), and a count of every
    // frame of the throughput phase.
    let (arrivals, mut arrived) = mpsc::unbounded_channel::<(String, Instant)>();
    let delivered = Arc::new(AtomicU64::new(0));
    let before = rss_kib(args.pid);
    let opening = Instant::now();
    let mut opened = 0;
    while opened < args.connections {
        let wave = (args.connections - opened).min(200);
        let mut handshakes = Vec::with_capacity(wave);
        for i in opened..opened + wave {
            let url = setup.ws_url.clone();
            let topics = [
                setup.topics[0].clone(),
                setup.topics[1 + i % args.rooms].clone(),
            ];
            let (arrivals, delivered) = (arrivals.clone(), delivered.clone());
            handshakes.push(tokio::spawn(async move {
                let (socket, _) = tokio_tungstenite::connect_async(url)
                    .await
                    .expect("the upgrade succeeds");
                let (mut sink, mut frames) = socket.split();
                for topic in &topics {
                    let subscribe = json!({"subscribe": {"topic": topic}}).to_string();
                    sink.send(tokio_tungstenite::tungstenite::Message::Text(
                        subscribe.into(),
                    ))
                    .await
                    .expect("subscribe");
                }
                let mut subscribed = 0;
                while subscribed < topics.len() {
                    let Some(Ok(message)) = frames.next().await else {
                        panic!("the socket closed before subscribing")
                    };
                    if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                        let frame: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        assert!(frame.get("error").is_none(), "{frame}");
                        if frame.get("subscribed").is_some() {
                            subscribed += 1;
                        }
                    }
                }
                tokio::spawn(async move {
                    let _sink = sink;
                    while let Some(Ok(message)) = frames.next().await {
                        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                            // Cheap test first: most frames are the throughput phase's.
                            if text.contains("\"round ") {
                                let frame: Value =
                                    serde_json::from_str(&text).unwrap_or(Value::Null);
                                if let Some(title) = frame["announcement"]["title"].as_str() {
                                    let _ = arrivals.send((title.to_string(), Instant::now()));
                                }
                            } else if text.contains("\"announcement\"") {
                                delivered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }));
        }
        for handshake in handshakes {
            handshake.await.expect("a socket opened and subscribed");
        }
        opened += wave;
    }
    let opening = opening.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(args.pid);
    let per_socket = after.saturating_sub(before) as f64 / args.connections as f64;
    println!(
        "{name}: {} sockets opened and subscribed to 2 rooms each in {:.1} s; server RSS {:.1} -> {:.1} MiB: {per_socket:.2} KiB per socket",
        args.connections,
        opening.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
    );

    let mut all = Vec::new();
    let fanout_cpu = cpu_seconds(pid);
    for round in 0..args.rounds {
        let title = format!("round {round}");
        let started = Instant::now();
        publish(&http, &args, &setup, 0, &title).await;
        let mut latencies = Vec::with_capacity(args.connections);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while latencies.len() < args.connections {
            match tokio::time::timeout_at(deadline, arrived.recv()).await {
                Ok(Some((seen, at))) if seen == title => latencies.push(at - started),
                Ok(Some(_)) => {}
                _ => panic!(
                    "{name} round {round}: {} of {} sockets heard within 60 s",
                    latencies.len(),
                    args.connections
                ),
            }
        }
        latencies.sort_unstable();
        println!(
            "{name} fan-out {round}: one message to {} sockets in one room: p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms",
            args.connections,
            percentile(&latencies, 0.50),
            percentile(&latencies, 0.99),
            percentile(&latencies, 1.0),
        );
        all.extend(latencies);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Less the half-second pauses between rounds, when the server is idle.
    let fanout_cpu = cpu_seconds(pid) - fanout_cpu;
    all.sort_unstable();
    println!(
        "{name} fan-out, all {} deliveries: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server CPU {fanout_cpu:.2} s, {:.2} us per delivered frame",
        all.len(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        percentile(&all, 1.0),
        fanout_cpu * 1e6 / all.len().max(1) as f64,
    );

    if args.seconds > 0 {
        let setup = Arc::new(setup);
        let args = Arc::new(args);
        let stop = Instant::now() + Duration::from_secs(args.seconds);
        let sent = Arc::new(AtomicU64::new(0));
        let cpu_before = cpu_seconds(args.pid);
        let counted_before = delivered.load(Ordering::Relaxed);
        let started = Instant::now();
        let mut publishers = Vec::new();
        for p in 0..args.publishers {
            let (http, setup, args, sent) =
                (http.clone(), setup.clone(), args.clone(), sent.clone());
            publishers.push(tokio::spawn(async move {
                let mut n = p;
                while Instant::now() < stop {
                    let room = 1 + n % args.rooms;
                    publish(&http, &args, &setup, room, "throughput").await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    n += args.publishers;
                }
            }));
        }
        for publisher in publishers {
            publisher.await.expect("a publisher");
        }
        // What was sent arrives (each message reaches connections / rooms sockets).
        let expected = sent.load(Ordering::Relaxed) * (args.connections / args.rooms) as u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        while delivered.load(Ordering::Relaxed) - counted_before < expected
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = cpu_seconds(args.pid) - cpu_before;
        let frames = delivered.load(Ordering::Relaxed) - counted_before;
        println!(
            "{name} throughput: {} messages to rooms of {} sockets in {elapsed:.1} s: {frames} of {expected} frames delivered, {:.0} frames/s; server CPU {cpu:.2} s, {:.2} us per delivered frame",
            sent.load(Ordering::Relaxed),
            args.connections / args.rooms,
            frames as f64 / elapsed,
            cpu * 1e6 / frames.max(1) as f64,
        );
    }
    println!(
        "{name}: server RSS at the end {:.1} MiB",
        rss_kib(pid) as f64 / 1024.0
    );
}
