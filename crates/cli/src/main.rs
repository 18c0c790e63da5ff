//! `duovarsity`: run the platform, one component, migrations, or admin tasks.
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand, ValueEnum};
use duovarsity::{Component, Platform};
use duovarsity_common::telemetry;
use duovarsity_config::Config;
use duovarsity_proto::user::Role;

/// mimalloc instead of glibc's allocator: the gateway's profile under load spent 12 % of
/// its time in glibc `malloc`/`free` (per-request headers, metadata and JSON buffers across
/// the runtime's worker threads); mimalloc's per-thread free lists cost a fraction of that
/// (`scripts/bench-gateway.sh`, docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "duovarsity",
    version,
    about = "The Duovarsity online-learning platform"
)]
struct Cli {
    /// A TOML configuration file (also DUOVARSITY_CONFIG). Environment variables override it.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start every service and the gateway in this process (the default).
    Up,
    /// Run one service, or the gateway, against the configured backends.
    Serve {
        /// A service of the platform's module table, or `gateway`.
        #[arg(value_parser = PossibleValuesParser::new(serve_targets()))]
        component: String,
    },
    /// Apply every service's database migrations (or one service's) and exit.
    Migrate {
        /// Only this service's migrations.
        #[arg(long, value_parser = PossibleValuesParser::new(duovarsity::module_names()))]
        service: Option<String>,
    },
    /// Load data into the configured databases.
    Seed {
        /// A demo catalog: four instructors and twenty courses with lessons.
        #[arg(long)]
        demo: bool,
        /// Load-test learners `learner-<i>@load.duovarsity.test` for i in 0..N, all with
        /// one password (printed); existing ones are kept. With the demo catalog there,
        /// each also follows a learning track (enrollments `discovery evaluate` measures).
        #[arg(long, value_name = "N")]
        learners: Option<usize>,
        /// A large generated catalog for benchmarks: N courses `gen-<i>` of ten lessons
        /// each, by twenty instructors `instructor-<n>@load.duovarsity.test`.
        #[arg(long, value_name = "N")]
        courses: Option<usize>,
    },
    /// Administrative tasks on the configured database.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Signing-key maintenance.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// AI-routing tasks against the running platform.
    Ai {
        #[command(subcommand)]
        command: AiCommand,
    },
    /// Analytics maintenance.
    Analytics {
        #[command(subcommand)]
        command: AnalyticsCommand,
    },
    /// Search maintenance.
    Discovery {
        #[command(subcommand)]
        command: DiscoveryCommand,
    },
}

#[derive(Subcommand)]
enum AnalyticsCommand {
    /// Rebuild the leaderboards' Redis sorted sets (this week's and last week's) from the
    /// analytics database, which is their truth.
    Rebuild,
}

#[derive(Subcommand)]
enum DiscoveryCommand {
    /// Replace the search catalog with what the course and content services list now
    /// (published courses and their lessons' published text); every discovery replica's
    /// index follows within a second.
    Reindex,
    /// Hold out each learner's last enrollment, recommend from the rest, and print
    /// hit-rate@K of the recommender and of a popularity baseline side by side.
    Evaluate {
        #[arg(long, default_value_t = 10)]
        k: usize,
    },
}

#[derive(Subcommand)]
enum AiCommand {
    /// Pre-generate the shared hints and explanations of a course's lessons, for every
    /// tier, so that learners find them cached.
    Warm {
        /// The course's id or slug.
        #[arg(long)]
        course: String,
    },
}

/// `serve` runs the gateway, or a service of the module table.
const GATEWAY: &str = "gateway";

fn serve_targets() -> Vec<&'static str> {
    let mut targets = duovarsity::module_names();
    targets.push(GATEWAY);
    targets
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an account with a role (for example the first admin).
    CreateUser {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        #[arg(long, value_enum, default_value = "learner")]
        role: RoleArg,
        #[arg(long, default_value = "Administrator")]
        display_name: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new signing key to the key directory. Running user services reload the
    /// directory within seconds and sign with it; the previous key keeps verifying, older
    /// ones are removed (and stop verifying within DUOVARSITY_JWKS_REFRESH_SECS).
    Rotate,
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Learner,
    Instructor,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Learner => Role::Learner,
            RoleArg::Instructor => Role::Instructor,
            RoleArg::Admin => Role::Admin,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref())
        .and_then(|config| duovarsity::check_config(&config).map(|()| config))
    {
        Ok(config) => config,
        Err(error) => {
            eprintln!("duovarsity: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("duovarsity: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command.unwrap_or(Command::Up), config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("duovarsity: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Up => serve(config, Component::All, "duovarsity").await,
        Command::Serve { component } if component == GATEWAY => {
            serve(config, Component::Gateway, GATEWAY).await
        }
        Command::Serve { component } => {
            let entry = duovarsity::module(&component)?;
            serve(config, Component::Service(entry.name), entry.name).await
        }
        Command::Migrate { service } => {
            let _telemetry = telemetry::init("duovarsity-migrate", config.log_format);
            for migrated in duovarsity::migrate(&config, service.as_deref()).await? {
                if migrated.applied.is_empty() {
                    println!("{}: up to date", migrated.service);
                } else {
                    println!(
                        "{}: applied {}",
                        migrated.service,
                        migrated.applied.join(", ")
                    );
                }
            }
            Ok(())
        }
        Command::Seed {
            demo,
            learners,
            courses,
        } => {
            if !demo && learners.is_none() && courses.is_none() {
                anyhow::bail!(
                    "say what to seed: `duovarsity seed --demo`, `--learners N` and/or `--courses N`"
                );
            }
            let _telemetry = telemetry::init("duovarsity-seed", config.log_format);
            if demo {
                let report = duovarsity::seed::demo(&config).await?;
                if report.already_present {
                    println!("the demo catalog is already there; nothing changed");
                } else {
                    println!(
                        "seeded {} courses with {} lessons; instructors sign in as ada@demo.duovarsity.dev (and grace@, linus@, mei@) with password {}",
                        report.courses,
                        report.lessons,
                        duovarsity::seed::DEMO_PASSWORD
                    );
                }
            }
            if let Some(count) = courses {
                let started = std::time::Instant::now();
                let made = duovarsity::generated::seed(&config, count).await?;
                println!(
                    "generated {} courses with {} lessons ({} existed) in {:.1} s",
                    made.courses,
                    made.lessons,
                    made.existed,
                    started.elapsed().as_secs_f64()
                );
            }
            if let Some(count) = learners {
                let started = std::time::Instant::now();
                let created = duovarsity::seed::learners(&config, count).await?;
                println!(
                    "{created} new learners ({} existed) in {:.1} s: {} .. {} with password {}",
                    count - created,
                    started.elapsed().as_secs_f64(),
                    duovarsity::seed::learner_email(0),
                    duovarsity::seed::learner_email(count.saturating_sub(1)),
                    duovarsity::seed::LEARNER_PASSWORD
                );
                match duovarsity::tracks::seed(&config, count).await? {
                    Some(tracks) => println!(
                        "{} learners follow learning tracks: {} new enrollments",
                        tracks.learners, tracks.enrollments
                    ),
                    None => println!(
                        "no learning-track enrollments: the demo catalog is not there (seed --demo)"
                    ),
                }
            }
            Ok(())
        }
        Command::Admin {
            command:
                AdminCommand::CreateUser {
                    email,
                    password,
                    role,
                    display_name,
                },
        } => {
            let _telemetry = telemetry::init("duovarsity-admin", config.log_format);
            let user =
                duovarsity::create_user(&config, &email, &password, &display_name, role.into())
                    .await?;
            println!(
                "created {} ({}) with role {:?}",
                user.email,
                user.id,
                Role::from(role)
            );
            Ok(())
        }
        Command::Ai {
            command: AiCommand::Warm { course },
        } => {
            let _telemetry = telemetry::init("duovarsity-ai", config.log_format);
            let report = duovarsity::warm::warm(&config, &course).await?;
            println!(
                "{} lessons: {} answers generated, {} already cached, {} failed",
                report.lessons, report.generated, report.cached, report.failed
            );
            if report.failed > 0 {
                anyhow::bail!("{} answers could not be generated", report.failed);
            }
            Ok(())
        }
        Command::Analytics {
            command: AnalyticsCommand::Rebuild,
        } => {
            let _telemetry = telemetry::init("duovarsity-analytics", config.log_format);
            let members = duovarsity::rebuild_leaderboards(&config).await?;
            println!("leaderboards rebuilt: {members} members in this and last week's sets");
            Ok(())
        }
        Command::Discovery {
            command: DiscoveryCommand::Reindex,
        } => {
            let _telemetry = telemetry::init("duovarsity-discovery", config.log_format);
            let report = duovarsity::discovery::reindex(&config).await?;
            let written = report.written;
            println!(
                "reindexed in {:.1} s: {} courses, {} lessons; {} courses unlisted, {} lessons removed",
                report.took.as_secs_f64(),
                written.courses,
                written.lessons,
                written.unlisted,
                written.removed_lessons
            );
            Ok(())
        }
        Command::Discovery {
            command: DiscoveryCommand::Evaluate { k },
        } => {
            let _telemetry = telemetry::init("duovarsity-discovery", config.log_format);
            let found = duovarsity::discovery::evaluate(&config, k).await?;
            println!(
                "{} learners, each one's last enrollment held out: hit-rate@{} recommender {:.3}, popularity {:.3} ({:.2}x)",
                found.learners,
                found.k,
                found.hit_rate(),
                found.baseline_hit_rate(),
                found.hit_rate() / found.baseline_hit_rate().max(f64::MIN_POSITIVE)
            );
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Rotate,
        } => {
            let dir = config.jwt_keys_dir();
            let kid = duovarsity_user::rotate_keys(&dir)?;
            println!(
                "new signing key {kid} in {}; running user services sign with it once they reload the directory (within seconds)",
                dir.display()
            );
            Ok(())
        }
    }
}

async fn serve(config: Config, component: Component, name: &'static str) -> anyhow::Result<()> {
    let _telemetry = telemetry::init(name, config.log_format);
    let platform = Platform::start(config, component).await?;
    // Registered before the platform announces itself, so a SIGTERM sent by whoever read
    // the announcement is handled, not fatal.
    let signal = shutdown_signal()?;
    // The announcement only informs: a reader that went away (a closed stdout) must not
    // stop the platform, so write errors are ignored (println! would panic).
    let mut announcement = String::new();
    if let Some(addr) = platform.http_addr() {
        announcement +=
            &format!("REST gateway   http://{addr}  (OpenAPI: http://{addr}/openapi.json)\n");
    }
    if let Some(addr) = platform.grpc_addr() {
        announcement += &format!("gRPC services  {addr}  (try: grpcurl -plaintext {addr} list)\n");
    }
    let admin = platform.admin_addr();
    announcement += &format!(
        "Admin          http://{admin}  (/metrics, /healthz; the gateway's /status, /readyz)\n"
    );
    announcement += "Press Ctrl-C to stop.\n";
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(announcement.as_bytes())
        .and_then(|()| stdout.flush());
    drop(stdout);
    let stop = platform.shutdown_token();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutting down");
        stop.cancel();
    });
    platform.wait().await
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM. On Unix both handlers are installed when this
/// returns.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
