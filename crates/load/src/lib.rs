//! `duovarsity-load`: a load test of the whole platform through its public REST and
//! WebSocket API, with goose. `make load` starts a local platform with the demo catalog
//! and bulk learners and runs this against it; any running platform works:
//!
//! ```text
//! duovarsity seed --demo --learners 200      # against the platform's database
//! duovarsity-load -H http://127.0.0.1:8080 --rate 300 -u 200 -t 60s --out load-report
//! ```
//!
//! Goose's own options (`--help`) apply: users (`-u`), ramp (`-r`, users started per
//! second), duration (`-t`), `--test-plan`, `--scenarios`, logs. The arrival rate is held
//! by pacing: each user pauses `users / rate` seconds on average between requests, so a
//! slower answer does not slow the arrivals (an open loop) while answers are faster than
//! the pause; an answer slower than its user's cadence is backfilled by goose's
//! coordinated-omission mitigation. The report says when the rate was not held.

#![forbid(unsafe_code)]

mod authoring;
mod buying;
mod catalog;
mod live;
mod plan;
mod report;
mod requests;
mod scenarios;
mod timeline;

use std::path::PathBuf;

use anyhow::Context as _;
use goose::config::GooseConfiguration;
use goose::prelude::*;

/// A learner's day of traffic against a running Duovarsity, with a report against the SLOs.
#[derive(clap::Parser)]
#[command(name = "duovarsity-load")]
pub struct Args {
    /// Requests per second to offer: each user pauses users/rate seconds (on average)
    /// between its requests, whatever the latency.
    #[arg(long, default_value_t = 300)]
    rate: usize,
    /// Where report.md, timeline.svg, summary.json and goose.html go.
    #[arg(long, default_value = "load-report")]
    out: PathBuf,
    /// The load-test learners' password (`duovarsity seed --learners N` prints it).
    #[arg(long, default_value = "load-test-password-2026")]
    learner_password: String,
    /// The instructor who authors drafts (a demo instructor by default).
    #[arg(long, default_value = "ada@demo.duovarsity.dev")]
    instructor_email: String,
    #[arg(long, default_value = "demo-password-2026")]
    instructor_password: String,
    /// More gateways of the same platform (comma-separated base URLs): users are spread
    /// over `--host` and these by their index.
    #[arg(long, value_delimiter = ',')]
    also: Vec<String>,
    #[command(flatten)]
    goose: GooseConfiguration,
}

const DEFAULT_HOST: &str = "http://127.0.0.1:8080";
const DEFAULT_USERS: usize = 200;

/// Runs the load test and writes its report; returns the summary (`summary.json`). Once
/// per process: the scenarios share one plan.
pub async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let base = args
        .goose
        .host
        .clone()
        .unwrap_or_else(|| DEFAULT_HOST.to_string())
        .trim_end_matches('/')
        .to_string();
    let users = args.goose.users.unwrap_or(DEFAULT_USERS);
    let target_rps = args.rate;
    anyhow::ensure!(target_rps > 0, "--rate must be at least 1");
    // Each user's pause between requests: users / rate seconds.
    let pace = std::time::Duration::from_secs_f64(users as f64 / target_rps as f64);

    let client = reqwest13::Client::new();
    preflight(&client, &base, users, &args.learner_password).await?;
    let catalog = catalog::Catalog::fetch(&client, &base).await?;
    println!(
        "load: {} published courses ({} paid) at {base}; {users} users at {target_rps} requests/s",
        catalog.courses.len(),
        catalog.paid().count()
    );
    let hosts = std::iter::once(base.clone())
        .chain(
            args.also
                .iter()
                .map(|h| h.trim_end_matches('/').to_string()),
        )
        .collect();
    let fresh = plan::PLAN
        .set(plan::Plan {
            catalog,
            hosts,
            learner_password: args.learner_password.clone(),
            instructor: (
                args.instructor_email.clone(),
                args.instructor_password.clone(),
            ),
            live: live::Tally::default(),
            tally: plan::Tally::default(),
            timeline: timeline::Timeline::default(),
        })
        .is_ok();
    anyhow::ensure!(fresh, "one load test per process");

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let goose_report = args.out.join("goose.html");
    let metrics = attack(args.goose.clone(), &base, pace, &goose_report)
        .await
        .map_err(|error| anyhow::anyhow!("{error:?}"))?;

    // Frames of the last changes are still on their way: give them a moment.
    let plan = plan::PLAN.get().expect("set above");
    for _ in 0..50 {
        let live = &plan.live;
        if live.received.load(std::sync::atomic::Ordering::Relaxed)
            >= live.expected.load(std::sync::atomic::Ordering::Relaxed)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let setup = report::Setup {
        base,
        target_rps,
        users,
    };
    let (markdown, summary) = report::write(&args.out, &setup, &metrics, plan)?;
    println!("{markdown}");
    println!(
        "load: the report is in {}",
        args.out.join("report.md").display()
    );
    Ok(summary)
}

/// Goose with this test's defaults (each overridden by its command-line option) and the
/// scenarios; the metrics once the run ends.
async fn attack(
    config: GooseConfiguration,
    base: &str,
    pace: std::time::Duration,
    report: &std::path::Path,
) -> Result<GooseMetrics, GooseError> {
    let mut attack = *GooseAttack::initialize_with_config(config)?
        .set_default(GooseDefault::Host, base)?
        .set_default(GooseDefault::Users, DEFAULT_USERS)?
        .set_default(GooseDefault::IncreaseRate, "20")?
        .set_default(GooseDefault::RunTime, 60)?
        .set_default(
            GooseDefault::CoordinatedOmissionMitigation,
            GooseCoordinatedOmissionMitigation::Average,
        )?
        .set_default(GooseDefault::RunningMetrics, 10)?
        .set_default(GooseDefault::NoTelnet, true)?
        .set_default(GooseDefault::NoWebSocket, true)?
        .set_default(GooseDefault::ReportFile, report.to_string_lossy().as_ref())?;
    for scenario in scenarios::scenarios(pace)? {
        attack = attack.register_scenario(scenario);
    }
    attack.execute().await
}

/// The last learner the users sign in as must exist: say how to create them if not.
async fn preflight(
    client: &reqwest13::Client,
    base: &str,
    users: usize,
    password: &str,
) -> anyhow::Result<()> {
    let email = plan::learner_email(users.saturating_sub(1));
    let response = client
        .post(format!("{base}/v1/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .with_context(|| format!("{base} does not answer"))?;
    anyhow::ensure!(
        response.status().is_success(),
        "{email} cannot sign in ({}): each of the {users} users signs in as its own learner; \
         create them with `duovarsity seed --learners {users}` against the platform's database",
        response.status()
    );
    Ok(())
}
