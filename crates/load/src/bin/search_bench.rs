//! Search latency at a fixed arrival rate, side by side in one run: the discovery service's
//! `Search` over gRPC (in the service), `GET /v1/search` through the gateway, and today's
//! catalog filter `GET /v1/courses?query=` through the gateway, each for the same queries.
//!
//! ```text
//! cargo run --release -p duovarsity-load --bin search_bench -- \
//!     --base http://127.0.0.1:18097 --grpc http://127.0.0.1:15097 --queries queries.txt
//! ```
//! Open loop: request `k` is due at `k / rate` seconds and its latency counts from then, so
//! a stall shows in the percentiles instead of slowing the arrivals (no coordinated
//! omission). `scripts/bench-discovery.sh` seeds a catalog, writes the queries and runs
//! this. 127.0.0.1 only; bounded by rate x seconds x rounds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duovarsity_proto::discovery::SearchRequest;
use duovarsity_proto::discovery::discovery_service_client::DiscoveryServiceClient;
use tokio::task::JoinSet;
use tonic::transport::Channel;

#[derive(clap::Parser)]
struct Args {
    /// The gateway of the running platform.
    #[arg(long)]
    base: String,
    /// The gRPC listener serving the discovery service.
    #[arg(long)]
    grpc: String,
    /// What learners typed, one query per line.
    #[arg(long)]
    queries: PathBuf,
    #[arg(long, default_value_t = 500)]
    rate: u32,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Each target runs this many times, in turns.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Seconds of quiet before each run: the catalog filter overloads the course service
    /// at these rates, and its queue drains after the run (into the next one, without it).
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// The platform's admin listener: the service's own search time is read from its
    /// `discovery_search_duration_seconds` histogram before and after each run.
    #[arg(long)]
    admin: Option<String>,
}

#[derive(Clone, Copy)]
enum Target {
    Service,
    Gateway,
    Catalog,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Service => "discovery Search (gRPC, in service)",
            Target::Gateway => "GET /v1/search (gateway)",
            Target::Catalog => "GET /v1/courses?query= (gateway)",
        }
    }
}

struct Clients {
    http: reqwest13::Client,
    grpc: DiscoveryServiceClient<Channel>,
    base: String,
}

/// One request; what went wrong, if anything.
async fn ask(clients: &Clients, target: Target, query: &str) -> Result<(), String> {
    match target {
        Target::Service => {
            let mut grpc = clients.grpc.clone();
            let request = SearchRequest {
                q: query.to_string(),
                ..SearchRequest::default()
            };
            grpc.search(request)
                .await
                .map(drop)
                .map_err(|status| format!("gRPC {:?}", status.code()))
        }
        Target::Gateway | Target::Catalog => {
            let (path, key, value) = match target {
                Target::Gateway => ("/v1/search", "q", query),
                // The catalog filter matches text literally: the first word, as typed.
                _ => (
                    "/v1/courses",
                    "query",
                    query.split(' ').next().unwrap_or(query),
                ),
            };
            let Ok(url) = reqwest13::Url::parse_with_params(
                &format!("{}{path}", clients.base),
                &[(key, value), ("pageSize", "10")],
            ) else {
                return Err("a query that is not a URL".into());
            };
            match clients.http.get(url).send().await {
                Ok(answer) if answer.status().is_success() => {
                    answer.bytes().await.map(drop).map_err(|e| e.to_string())
                }
                Ok(answer) => Err(format!("HTTP {}", answer.status())),
                Err(error) => Err(format!("{error}")),
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1000.0
}

async fn run(clients: &Arc<Clients>, target: Target, queries: &Arc<Vec<String>>, args: &Args) {
    let total = u64::from(args.rate) * args.seconds;
    let gap = Duration::from_secs(1) / args.rate;
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    for k in 0..total {
        let due = start + gap * u32::try_from(k).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due).await;
        let (clients, queries) = (clients.clone(), queries.clone());
        tasks.spawn(async move {
            let query = &queries[usize::try_from(k).unwrap_or(0) % queries.len()];
            let outcome = ask(&clients, target, query).await;
            (due.elapsed(), outcome)
        });
    }
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    while let Some(done) = tasks.join_next().await {
        let (took, outcome) = done.expect("a request task");
        latencies.push(took);
        if let Err(kind) = outcome {
            *errors.entry(kind).or_default() += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "{:<38} {:>5.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  errors {:?}",
        target.name(),
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        errors
    );
}

/// Cumulative counts of the service's search-time histogram, by upper bound (seconds).
async fn service_histogram(clients: &Clients, admin: &str) -> Vec<(f64, f64)> {
    let Ok(answer) = clients.http.get(format!("{admin}/metrics")).send().await else {
        return Vec::new();
    };
    let text = answer.text().await.unwrap_or_default();
    text.lines()
        .filter_map(|line| line.strip_prefix("discovery_search_duration_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The smallest histogram bound under which 50 % and 99 % of the searches between two
/// readings took, in milliseconds.
fn service_quantiles(before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<(f64, f64, f64)> {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, n - earlier)
        })
        .collect();
    let total = delta.last()?.1;
    let bound = |q: f64| {
        delta
            .iter()
            .find(|(_, n)| *n >= q * total)
            .map(|(le, _)| le * 1000.0)
    };
    Some((bound(0.5)?, bound(0.99)?, total))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let queries: Vec<String> = std::fs::read_to_string(&args.queries)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    anyhow::ensure!(
        !queries.is_empty(),
        "no queries in {}",
        args.queries.display()
    );
    let clients = Arc::new(Clients {
        http: reqwest13::Client::builder()
            .pool_max_idle_per_host(512)
            .timeout(Duration::from_secs(10))
            .build()?,
        grpc: DiscoveryServiceClient::new(
            Channel::from_shared(args.grpc.clone())?
                .connect_timeout(Duration::from_secs(3))
                .tcp_nodelay(true)
                .timeout(Duration::from_secs(10))
                .connect()
                .await?,
        ),
        base: args.base.clone(),
    });
    let queries = Arc::new(queries);
    println!(
        "{} queries, {} req/s for {} s per run, {} rounds",
        queries.len(),
        args.rate,
        args.seconds,
        args.rounds
    );
    let began = Instant::now();
    for round in 1..=args.rounds {
        println!("-- round {round}");
        for target in [Target::Service, Target::Gateway, Target::Catalog] {
            tokio::time::sleep(Duration::from_secs(args.settle)).await;
            let before = match &args.admin {
                Some(admin) => service_histogram(&clients, admin).await,
                None => Vec::new(),
            };
            run(&clients, target, &queries, &args).await;
            if let Some(admin) = &args.admin
                && !matches!(target, Target::Catalog)
                && let Some((p50, p99, n)) =
                    service_quantiles(&before, &service_histogram(&clients, admin).await)
            {
                println!(
                    "{:<38} {n:>5.0} searches: in the service p50 <= {p50} ms, p99 <= {p99} ms",
                    "  (its histogram)"
                );
            }
        }
    }
    println!("done in {:.0} s", began.elapsed().as_secs_f64());
    Ok(())
}
