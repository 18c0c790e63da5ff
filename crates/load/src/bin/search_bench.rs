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

/// One request; whether it succeeded.
async fn ask(clients: &Clients, target: Target, query: &str) -> bool {
    match target {
        Target::Service => {
            let mut grpc = clients.grpc.clone();
            let request = SearchRequest {
                q: query.to_string(),
                ..SearchRequest::default()
            };
            grpc.search(request).await.is_ok()
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
                return false;
            };
            let sent = clients.http.get(url).send().await;
            match sent {
                Ok(answer) => answer.status().is_success() && answer.bytes().await.is_ok(),
                Err(_) => false,
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
            let ok = ask(&clients, target, query).await;
            (due.elapsed(), ok)
        });
    }
    let mut latencies = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut errors = 0;
    while let Some(done) = tasks.join_next().await {
        let (took, ok) = done.expect("a request task");
        latencies.push(took);
        errors += usize::from(!ok);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "{:<38} {:>5.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>7.2} ms  errors {}",
        target.name(),
        latencies.len() as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        errors
    );
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
            run(&clients, target, &queries, &args).await;
        }
    }
    println!("done in {:.0} s", began.elapsed().as_secs_f64());
    Ok(())
}
