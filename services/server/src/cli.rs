//! `rollgate`: the command line (serve, migrate, token, verify, rebuild, audit).

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::app::{open_store, Application};
use crate::config::{AuthArgs, DatabaseArgs, ServeArgs};
use crate::export::{self as audit, ExportFormat, ExportRange};
use rollgate_store::{Clock, Head, SystemClock};

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
        auth: Box<AuthArgs>,
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
    /// Drop read models and rebuild them from position 0; prints the position reached.
    Rebuild {
        #[command(flatten)]
        database: DatabaseArgs,
        /// One read model (approver_inbox, audit_trail, decision_log, deviation_index,
        /// github_bindings, rollout_summaries); every one when omitted.
        #[arg(long)]
        projection: Option<String>,
    },
    /// Export the audit log, verify it (in the database or an export file), print its head.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Write every stored event with its chain hashes, page by page, for offline checks.
    Export {
        #[command(flatten)]
        database: DatabaseArgs,
        /// `ndjson` (one JSON object per line) or `csv` (header row, JSON payload columns).
        #[arg(long, value_enum, default_value_t = ExportFormat::Ndjson)]
        format: ExportFormat,
        /// Write here instead of standard output (the head of the export is then printed).
        #[arg(long)]
        output: Option<std::path::PathBuf>,
        /// First position to export (default 1).
        #[arg(long)]
        from_position: Option<u64>,
        /// Last position to export (default: the head when the export starts).
        #[arg(long)]
        to_position: Option<u64>,
    },
    /// Verify the hash chain: of the database, or with --export of an export file offline.
    Verify {
        #[command(flatten)]
        database: DatabaseArgs,
        /// A head exported earlier (`{"position":N,"hash":"…"}`); truncation or rewriting
        /// behind it is reported.
        #[arg(long)]
        head: Option<std::path::PathBuf>,
        /// An export file to verify without any database.
        #[arg(long)]
        export: Option<std::path::PathBuf>,
        /// The export's format (default: `csv` for a `.csv` file, else `ndjson`).
        #[arg(long, value_enum, requires = "export")]
        format: Option<ExportFormat>,
    },
    /// Print the head of the log: `{"position":N,"hash":"…"}`.
    Head {
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
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
            args.check_dev_keys()?;
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
            open_store(&db, clock, None).await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Commands::Verify { database, head } => {
            let exported = read_head_file(head.as_deref())?;
            verify_database(&database, clock, exported.as_ref()).await
        }
        Commands::Rebuild {
            database,
            projection,
        } => {
            if let Some(name) = &projection {
                if !rollgate_projections::READ_MODELS.contains(&name.as_str()) {
                    anyhow::bail!(
                        "unknown projection {name:?}: expected one of {}",
                        rollgate_projections::READ_MODELS.join(", ")
                    );
                }
            }
            refuse_missing_sqlite_file(&database.database_url)?;
            let store = open_store(&database, clock, None).await?;
            let position = rollgate_projections::rebuild(store, projection.as_deref()).await?;
            let rebuilt: Vec<&str> = match &projection {
                Some(name) => vec![name.as_str()],
                None => rollgate_projections::READ_MODELS.to_vec(),
            };
            println!(
                "{}",
                serde_json::json!({ "rebuilt": rebuilt, "position": position })
            );
            Ok(ExitCode::SUCCESS)
        }
        Commands::Audit(command) => audit(command, clock).await,
    }
}

async fn audit(command: AuditCommand, clock: Arc<dyn Clock>) -> anyhow::Result<ExitCode> {
    match command {
        AuditCommand::Export {
            database,
            format,
            output,
            from_position,
            to_position,
        } => {
            refuse_missing_sqlite_file(&database.database_url)?;
            let store = open_store(&database, clock, None).await?;
            let head = store.head().await?;
            let range = ExportRange::new(from_position, to_position, head.position)
                .map_err(|m| anyhow::anyhow!("--{}", m.replace('_', "-")))?;
            match output {
                None => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    audit::export_to(&*store, format, range, &mut out).await?;
                }
                Some(path) => {
                    // Written beside the target and renamed when complete, so a failed
                    // export never leaves a file that looks whole.
                    let mut partial = path.clone().into_os_string();
                    partial.push(".partial");
                    let partial = std::path::PathBuf::from(partial);
                    let file = std::fs::File::create(&partial)
                        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", partial.display()))?;
                    let mut out = std::io::BufWriter::new(file);
                    let written = audit::export_to(&*store, format, range, &mut out).await;
                    drop(out);
                    let last = match written {
                        Ok(last) => last,
                        Err(e) => {
                            let _ = std::fs::remove_file(&partial);
                            return Err(e);
                        }
                    };
                    std::fs::rename(&partial, &path)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                    let export_head = match last {
                        Some(h) => Some(h),
                        None if range.from == 1 => Some(Head {
                            position: 0,
                            hash: rollgate_store::chain::GENESIS_HASH.to_owned(),
                        }),
                        None => None,
                    };
                    if let Some(h) = export_head {
                        println!("{}", serde_json::to_string(&h)?);
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify {
            database,
            head,
            export,
            format,
        } => {
            let exported = read_head_file(head.as_deref())?;
            let Some(path) = export else {
                return verify_database(&database, clock, exported.as_ref()).await;
            };
            let format = format.unwrap_or_else(|| {
                let is_csv = path
                    .extension()
                    .is_some_and(|x| x.eq_ignore_ascii_case("csv"));
                if is_csv {
                    ExportFormat::Csv
                } else {
                    ExportFormat::Ndjson
                }
            });
            let file = std::fs::File::open(&path)
                .map_err(|e| anyhow::anyhow!("cannot read export file {}: {e}", path.display()))?;
            let report = audit::verify_export(
                std::io::BufReader::with_capacity(1 << 16, file),
                format,
                exported.as_ref(),
            );
            println!("{}", serde_json::to_string(&report)?);
            Ok(exit_code(&report))
        }
        AuditCommand::Head { database } => {
            refuse_missing_sqlite_file(&database.database_url)?;
            let store = open_store(&database, clock, None).await?;
            println!("{}", serde_json::to_string(&store.head().await?)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Recomputes the chain in the database (`rollgate verify`, `rollgate audit verify`).
async fn verify_database(
    database: &DatabaseArgs,
    clock: Arc<dyn Clock>,
    exported: Option<&Head>,
) -> anyhow::Result<ExitCode> {
    refuse_missing_sqlite_file(&database.database_url)?;
    let store = open_store(database, clock, None).await?;
    let report = rollgate_store::verify(&*store, exported).await?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(exit_code(&report))
}

fn exit_code(report: &rollgate_store::VerifyReport) -> ExitCode {
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Reads a head file (`{"position":N,"hash":"…"}`).
fn read_head_file(path: Option<&std::path::Path>) -> anyhow::Result<Option<Head>> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read head file {}: {e}", path.display()))?;
    let head = serde_json::from_str::<Head>(&text)
        .map_err(|e| anyhow::anyhow!("head file {} is not a head: {e}", path.display()))?;
    Ok(Some(head))
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
