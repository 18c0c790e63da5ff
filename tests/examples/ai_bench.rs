//! The AI router's added latency, open loop: requests leave at a fixed rate (not when
//! the previous one returned), and each latency is measured from its scheduled start,
//! so a slow server cannot hide its queueing. The same load goes straight to a mock
//! provider and through the gateway and router to it, side by side at each rate; the
//! difference is what the platform adds; each outcome is counted by status and reason.
//! Then overload: the rate the gateway sustains (closed loop), and twice that rate open
//! loop, where every answer must be a 200 or a refusal (503 `OVERLOADED`, 429) that came
//! back fast, with the refusals' p99 against the 50 ms goal. Last, the highest rate of
//! cache hits, closed loop.
//!
//! ```text
//! cargo run --release -p duovarsity-tests --example ai_bench -- \
//!     --catalog /tmp/catalog.toml --base http://127.0.0.1:18083
//! ```
//! It starts the mock and writes a catalog for it to `--catalog`, then waits for a
//! platform at `--base` started with `DUOVARSITY_AI_CATALOG_FILE` set to that file
//! (`scripts/bench-ai.sh` does both).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duovarsity_testkit::llm::{MockLlm, one_model_catalog};
use serde_json::{Value, json};

#[derive(clap::Parser)]
struct Args {
    #[arg(long)]
    catalog: std::path::PathBuf,
    #[arg(long, default_value = "http://127.0.0.1:18083")]
    base: String,
    /// Request rates to measure, per second.
    #[arg(long, value_delimiter = ',', default_value = "500,2000")]
    rates: Vec<u32>,
    /// Seconds per rate and target.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Concurrent clients of the closed-loop cache-hit run.
    #[arg(long, default_value_t = 64)]
    hit_clients: usize,
}

/// What one open-loop run saw: latencies of the answers (from each request's scheduled
/// start), of the refusals (503 `OVERLOADED` or 429: overload refused early; from the
/// moment the request left, since how fast the server refuses is what they measure), how
/// far behind its schedule the client itself was when sending, and a count of every other
/// outcome by status and reason (a pool timeout is 503 `UNAVAILABLE`).
#[derive(Default)]
struct Outcome {
    answered: Vec<Duration>,
    refused: Vec<Duration>,
    behind: Vec<Duration>,
    refused_by: BTreeMap<String, usize>,
    failed: BTreeMap<String, usize>,
}

impl Outcome {
    fn failures(&self) -> usize {
        self.failed.values().sum()
    }

    fn summary(&self) -> String {
        let mut parts = vec![format!(
            "{} answered (p50 {:.2} ms, p99 {:.2} ms)",
            self.answered.len(),
            ms(percentile(&self.answered, 0.5)),
            ms(percentile(&self.answered, 0.99)),
        )];
        if !self.refused.is_empty() {
            parts.push(format!(
                "{} refused ({}; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms)",
                self.refused.len(),
                counts(&self.refused_by),
                ms(percentile(&self.refused, 0.5)),
                ms(percentile(&self.refused, 0.99)),
                ms(self.refused.last().copied().unwrap_or_default()),
            ));
        }
        if !self.failed.is_empty() {
            parts.push(format!(
                "{} failed otherwise ({})",
                self.failures(),
                counts(&self.failed)
            ));
        }
        parts.push(format!(
            "client behind schedule p99 {:.2} ms",
            ms(percentile(&self.behind, 0.99))
        ));
        parts.join(", ")
    }
}

fn counts(by: &BTreeMap<String, usize>) -> String {
    by.iter()
        .map(|(what, n)| format!("{n} x {what}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sends `rate` requests a second for `seconds`, each at its scheduled time.
async fn open_loop(
    request: impl Fn() -> reqwest::RequestBuilder,
    rate: u32,
    seconds: u64,
) -> Outcome {
    let total = u64::from(rate) * seconds;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let at = start + interval.mul_f64(n as f64);
        tokio::time::sleep_until(at).await;
        let sent = request();
        let outcome = outcome.clone();
        tasks.push(tokio::spawn(async move {
            let left = tokio::time::Instant::now();
            let (class, what) = match sent.send().await {
                Ok(response) if response.status().is_success() => match response.bytes().await {
                    Ok(_) => ("answered", String::new()),
                    Err(error) => ("failed", format!("body: {error}")),
                },
                Ok(response) => {
                    let status = response.status().as_u16();
                    let body: Value = response.json().await.unwrap_or_default();
                    let reason = body["reason"].as_str().unwrap_or("-").to_string();
                    let refused = status == 429 || (status == 503 && reason == "OVERLOADED");
                    let class = if refused { "refused" } else { "failed" };
                    (class, format!("{status} {reason}"))
                }
                Err(error) => ("failed", format!("transport: {error}")),
            };
            let mut outcome = outcome.lock().unwrap();
            outcome.behind.push(left - at);
            match class {
                "answered" => outcome.answered.push(at.elapsed()),
                "refused" => {
                    outcome.refused.push(left.elapsed());
                    *outcome.refused_by.entry(what).or_default() += 1;
                }
                _ => *outcome.failed.entry(what).or_default() += 1,
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let mut outcome = Arc::try_unwrap(outcome)
        .ok()
        .expect("every task finished")
        .into_inner()
        .unwrap();
    outcome.answered.sort();
    outcome.refused.sort();
    outcome.behind.sort();
    outcome
}

/// Answers per second that `clients` closed-loop clients get: what the machine sustains.
async fn capacity(
    request: impl Fn() -> reqwest::RequestBuilder,
    clients: usize,
    seconds: u64,
) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let answered = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (template, answered) = (request(), answered.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let sent = template.try_clone().expect("a JSON body clones");
                    if sent.send().await.is_ok_and(|r| r.status().is_success()) {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    answered.load(Ordering::Relaxed) as f64 / seconds as f64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args: Args = clap::Parser::parse();
    let mock = MockLlm::openai().await;
    mock.set_completion_tokens(16);
    let key_file = args.catalog.with_extension("key");
    std::fs::write(&key_file, &mock.key).unwrap();
    // Free answers of 16 tokens and a budget no run can spend.
    let catalog = one_model_catalog(&mock, &key_file, "bench-model", 0.0, 16, 1000.0);
    std::fs::write(&args.catalog, catalog).unwrap();

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let ready = format!("{}/readyz", args.base);
    let mut up = false;
    for _ in 0..600 {
        if client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "no platform at {}", args.base);
    let account = json!({"email": "ai-bench@example.com", "password": "correct-horse-battery", "displayName": "Bench"});
    let _ = client
        .post(format!("{}/v1/auth/register", args.base))
        .json(&account)
        .send()
        .await;
    let login: Value = client
        .post(format!("{}/v1/auth/login", args.base))
        .json(&json!({"email": account["email"], "password": account["password"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["accessToken"].as_str().expect("a token").to_string();

    let body = json!({"model": "bench-model", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "one short answer, please"}]});
    let direct = {
        let (client, url, key, body) = (
            client.clone(),
            format!("{}/v1/chat/completions", mock.url()),
            mock.key.clone(),
            body.clone(),
        );
        move || client.post(&url).bearer_auth(&key).json(&body)
    };
    let routed = {
        let (client, url, token, body) = (
            client.clone(),
            format!("{}/v1/ai/chat/completions", args.base),
            token.clone(),
            body.clone(),
        );
        move || client.post(&url).bearer_auth(&token).json(&body)
    };
    // Warm connections on both paths.
    let _ = open_loop(&direct, 200, 1).await;
    let _ = open_loop(&routed, 200, 1).await;
    println!(
        "== open loop, {} s per rate and path; latency from each request's scheduled start",
        args.seconds
    );
    println!(
        "{:>6}  {:>22}  {:>22}  {:>20}",
        "rate/s", "direct p50 / p99 (ms)", "routed p50 / p99 (ms)", "added p50 / p99 (ms)"
    );
    for rate in &args.rates {
        let d = open_loop(&direct, *rate, args.seconds).await;
        let r = open_loop(&routed, *rate, args.seconds).await;
        let (d50, d99, r50, r99) = (
            percentile(&d.answered, 0.5),
            percentile(&d.answered, 0.99),
            percentile(&r.answered, 0.5),
            percentile(&r.answered, 0.99),
        );
        println!(
            "{rate:>6}  {:>10.2} / {:>8.2}  {:>10.2} / {:>8.2}  {:>8.2} / {:>8.2}",
            ms(d50),
            ms(d99),
            ms(r50),
            ms(r99),
            ms(r50) - ms(d50),
            ms(r99) - ms(d99)
        );
        println!("        direct: {}", d.summary());
        println!("        routed: {}", r.summary());
    }

    // Overload: twice what the machine sustains through the gateway. Every answer is a
    // 200 or a refusal that came back fast, never a timeout.
    let sustained = capacity(&routed, args.hit_clients, args.seconds.min(5)).await;
    let overload = (sustained * 2.0).round().max(1.0) as u32;
    let o = open_loop(&routed, overload, args.seconds).await;
    let refusal_p99 = ms(percentile(&o.refused, 0.99));
    println!(
        "== overload: sustained {sustained:.0} answers/s ({} closed-loop clients); open loop at {overload}/s for {} s",
        args.hit_clients, args.seconds
    );
    println!("        routed: {}", o.summary());
    println!(
        "        verdict: {} (refusal p99 {refusal_p99:.2} ms, goal <= 50 ms; other failures: {})",
        if refusal_p99 <= 50.0 && o.failures() == 0 {
            "ok"
        } else {
            "MISSED"
        },
        o.failures()
    );

    // Cache hits, closed loop: the same deterministic request from many clients.
    let mut cached = body.clone();
    cached["temperature"] = json!(0);
    let url = format!("{}/v1/ai/chat/completions", args.base);
    let calls_before = mock.calls();
    let _ = client
        .post(&url)
        .bearer_auth(&token)
        .json(&cached)
        .send()
        .await;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let done = Arc::new(Mutex::new((0usize, 0usize)));
    let workers: Vec<_> = (0..args.hit_clients)
        .map(|_| {
            let (client, url, token, cached, done) = (
                client.clone(),
                url.clone(),
                token.clone(),
                cached.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let answer = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&cached)
                        .send()
                        .await;
                    let hit = answer.is_ok_and(|a| {
                        a.headers()
                            .get("x-duovarsity-cache")
                            .is_some_and(|v| v == "hit")
                    });
                    let mut done = done.lock().unwrap();
                    if hit { done.0 += 1 } else { done.1 += 1 }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
    let (hits, other) = *done.lock().unwrap();
    println!(
        "== cache hits, closed loop, {} clients: {:.0} answers/s ({hits} hits, {other} other; provider calls during the run: {})",
        args.hit_clients,
        hits as f64 / args.seconds as f64,
        mock.calls() - calls_before
    );
}
