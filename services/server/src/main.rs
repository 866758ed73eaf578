//! `rollgate`: the rollout governance server and its command-line tools.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use rollgate_server::config::{DatabaseArgs, ServeArgs};
use rollgate_server::Application;
use rollgate_store::{Clock, SystemClock};

#[derive(Parser)]
#[command(
    name = "rollgate",
    version,
    about = "Rollout governance: plans, approvals, guardrails and an audit trail you can verify"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the HTTP server (SQLite at ./rollgate.db unless --database-url says otherwise).
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Print a development token signed with the local development key (`.rollgate/`).
    Token {
        /// The subject (`sub`): who the token speaks for.
        #[arg(long)]
        sub: String,
        /// Roles, comma separated (release_manager, approver, sre, governance_admin, auditor, viewer, service).
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Teams, comma separated (`*` = every team).
        #[arg(long, value_delimiter = ',')]
        teams: Vec<String>,
        /// Lifetime, e.g. 90s, 15m, 1h, 2d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        #[command(flatten)]
        auth: Box<rollgate_server::config::AuthArgs>,
    },
    /// Recompute the whole hash chain and print the verified head.
    Verify {
        #[command(flatten)]
        database: DatabaseArgs,
        /// A head exported earlier (`{"position":N,"hash":"…"}`); truncation or rewriting
        /// behind it is reported.
        #[arg(long)]
        head: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rollgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rollgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "text" {
        builder.init();
    } else {
        builder.json().with_current_span(true).init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    match cli.command {
        Commands::Serve(args) => {
            init_logs(&args.log_format);
            let app = Application::build(&args, clock).await?;
            tracing::info!(port = app.port(), "rollgate listening");
            app.run_until_stopped().await?;
            Ok(ExitCode::SUCCESS)
        }
        Commands::Token {
            sub,
            roles,
            teams,
            ttl,
            auth,
        } => {
            let keys = rollgate_auth::DevKeys::load_or_create(&auth.dev_key_dir)?;
            let request = rollgate_auth::MintRequest {
                sub,
                roles,
                teams,
                ttl_seconds: rollgate_auth::parse_ttl(&ttl)?,
                now: clock.now().timestamp(),
                issuer: auth.jwt_issuer.clone(),
                audience: auth.jwt_audience.clone(),
            };
            let token =
                keys.mint_with_claim_names(request, &auth.roles_claim, &auth.teams_claim)?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Commands::Migrate(db) => {
            rollgate_server::app::open_store(&db, clock, None).await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Commands::Verify { database, head } => {
            let exported = match head {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        anyhow::anyhow!("cannot read head file {}: {e}", path.display())
                    })?;
                    Some(
                        serde_json::from_str::<rollgate_store::Head>(&text).map_err(|e| {
                            anyhow::anyhow!("head file {} is not a head: {e}", path.display())
                        })?,
                    )
                }
                None => None,
            };
            refuse_missing_sqlite_file(&database.database_url)?;
            let store = rollgate_server::app::open_store(&database, clock, None).await?;
            let report = rollgate_store::verify(&*store, exported.as_ref()).await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Verifying a SQLite file that does not exist would create an empty, "valid" log: a
/// mistyped path must be an error instead.
fn refuse_missing_sqlite_file(url: &str) -> anyhow::Result<()> {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Ok(());
    };
    let path = rest.split('?').next().unwrap_or(rest);
    if path.is_empty() || path == ":memory:" || std::path::Path::new(path).exists() {
        Ok(())
    } else {
        anyhow::bail!("no database at {path}: nothing to verify")
    }
}
