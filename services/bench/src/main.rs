//! `rollgate-bench`: measures rollgate against a raw PostgreSQL baseline taken in the same run.
//!
//! Baseline: pgbench, `--clients` connections, one single-row INSERT per transaction. Then,
//! for PostgreSQL and SQLite, each on fresh databases: store appends (group commit) from
//! concurrent writers; governance commands over HTTP against the real `rollgate` binary;
//! `as_of` reconstruction of a 10,000-event stream; and on a log of `--log-events` events:
//! chain verification, projection rebuild, a filtered audit query through HTTP, the streamed
//! audit export, and the server's resident memory. Every load loop is bounded in time and
//! stays on the loopback interface.
//!
//! Build both binaries first: `cargo build --release -p rollgate-server -p rollgate-bench`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rollgate_domain::{ActorId, NoteAudience, RolloutEvent};
use rollgate_store::{BackendKind, EventData, EventStore, ExpectedVersion, StoreOptions};
use rollgate_testkit::TestDb;
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Events in the log for verify, rebuild, audit query, export and memory (0 skips them).
    #[arg(long, default_value_t = 1_000_000)]
    log_events: usize,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "postgres,sqlite")]
    backends: Vec<String>,
    /// The `rollgate` binary (default: beside this one).
    #[arg(long)]
    rollgate: Option<PathBuf>,
}

struct Latencies {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn summarize(mut latencies: Vec<Duration>, elapsed: Duration) -> Latencies {
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    Latencies {
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
    }
}

/// libpq knows nothing of sqlx's URL options.
fn libpq_url(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// pgbench: `clients` connections, each transaction one single-row INSERT.
fn pgbench_baseline(url: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
    let url = libpq_url(url);
    let setup = Command::new("psql")
        .args([url, "-q", "-c", "CREATE TABLE bench_baseline (id bigserial PRIMARY KEY, v double precision, at timestamptz DEFAULT now())"])
        .status()
        .context("psql is needed for the baseline")?;
    if !setup.success() {
        bail!("cannot create the baseline table");
    }
    let script = tempfile::NamedTempFile::new()?;
    std::fs::write(
        script.path(),
        "INSERT INTO bench_baseline (v) VALUES (random());\n",
    )?;
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
        ])
        .arg("-f")
        .arg(script.path())
        .arg(url)
        .output()
        .context("pgbench is needed for the baseline")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench output: {text}"))
}

fn note(i: u64) -> RolloutEvent {
    RolloutEvent::NoteAdded {
        audience: NoteAudience::Internal,
        text: format!("status update {i}"),
        stage: None,
        author: ActorId::parse("bench").expect("actor id"),
        at: chrono::Utc::now(),
    }
}

fn stored(e: &RolloutEvent, actor: &str, team: &str) -> EventData {
    EventData {
        id: Uuid::new_v4(),
        event_type: e.event_type().to_owned(),
        schema_version: e.schema_version(),
        payload: e.payload(),
        metadata: json!({
            "actor": { "id": actor, "roles": ["release_manager"] },
            "team": team,
            "request_id": Uuid::new_v4().to_string(),
            "correlation_id": Uuid::new_v4().to_string(),
            "causation_id": null,
            "policy_version": 0,
        }),
    }
}

/// `clients` writers appending one event per call to their own streams.
async fn store_appends(store: Arc<dyn EventStore>, clients: usize, seconds: u64) -> Latencies {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let e = stored(&note(n), "bench", "web");
                    store
                        .append(&format!("bench-{c}"), ExpectedVersion::Any, vec![e])
                        .await
                        .expect("append");
                    lat.push(t.elapsed());
                    n += 1;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    summarize(all, started.elapsed())
}

/// The real server, as a child process.
struct Server {
    child: Child,
    address: String,
    keys: rollgate_auth::DevKeys,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    async fn start(binary: &PathBuf, url: &str) -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let child = Command::new(binary)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", url, "--db-max-connections", "40"])
            // Development keys on PostgreSQL must be asked for explicitly.
            .arg("--dev-keys")
            .arg("--dev-key-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let address = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{address}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("the server did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let keys = rollgate_auth::DevKeys::load_or_create(dir.path())?;
        Ok(Server {
            child,
            address,
            keys,
            _dir: dir,
        })
    }

    fn token(&self, roles: &[&str], teams: &[&str]) -> anyhow::Result<String> {
        Ok(self.keys.mint(rollgate_auth::MintRequest {
            sub: "bench".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            teams: teams.iter().map(|s| s.to_string()).collect(),
            ttl_seconds: 3600,
            now: chrono::Utc::now().timestamp(),
            issuer: "rollgate".into(),
            audience: "rollgate".into(),
        })?)
    }

    /// Resident memory of the server process, in MiB.
    fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

fn create_body(i: usize) -> Value {
    json!({
        "feature_key": format!("bench-{i}"),
        "title": "Benchmark rollout",
        "team": "web",
        "plan": {
            "owner": "bench",
            "stages": [{
                "name": "all", "audience": { "percentage": 100 }, "min_soak_seconds": 0,
                "success_criteria": [], "rollback_criteria": [],
                "approvals": [{ "roles": ["approver"], "count": 1 }], "informed": []
            }],
            "readiness_checklist": [], "contingencies": []
        }
    })
}

async fn create_rollout(
    client: &reqwest::Client,
    server: &Server,
    token: &str,
    i: usize,
) -> anyhow::Result<String> {
    let res: Value = client
        .post(format!("{}/v1/rollouts", server.address))
        .bearer_auth(token)
        .json(&create_body(i))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(res["rollout_id"].as_str().context("rollout_id")?.to_owned())
}

/// `clients` clients each adding notes (a full governance command: authenticate, load,
/// decide, append) to a rollout of their own.
async fn http_commands(server: &Server, clients: usize, seconds: u64) -> anyhow::Result<Latencies> {
    let token = server.token(&["release_manager"], &["web"])?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let mut ids = Vec::new();
    for i in 0..clients {
        ids.push(create_rollout(&client, server, &token, i).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let client = client.clone();
            let url = format!("{}/v1/rollouts/{id}/notes", server.address);
            let token = token.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let res = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({ "audience": "internal", "text": "status update" }))
                        .send()
                        .await
                        .expect("request");
                    assert_eq!(res.status().as_u16(), 201);
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    Ok(summarize(all, started.elapsed()))
}

/// Builds a 10,000-event rollout stream and times `GET /v1/rollouts/{id}?as_of=…` at
/// scattered positions (after one warm-up read).
async fn as_of_latency(server: &Server, store: &dyn EventStore) -> anyhow::Result<Latencies> {
    let token = server.token(&["release_manager"], &["web"])?;
    let client = reqwest::Client::new();
    let id = create_rollout(&client, server, &token, 99_999).await?;
    let stream = format!("rollout-{id}");
    let mut version = store.stream_version(&stream).await?;
    while version < 10_000 {
        let batch: Vec<EventData> = (version..(version + 1000).min(10_000))
            .map(|i| stored(&note(i), "bench", "web"))
            .collect();
        version = store
            .append(&stream, ExpectedVersion::Exact(version), batch)
            .await?
            .stream_version;
    }
    let events = rollgate_store::read_whole_stream(store, &stream).await?;
    let url = |p: u64| format!("{}/v1/rollouts/{id}?as_of={p}", server.address);
    client
        .get(url(events[0].position))
        .bearer_auth(&token)
        .send()
        .await?;
    let mut lat = Vec::new();
    let started = Instant::now();
    for e in events.iter().step_by(97) {
        let t = Instant::now();
        let res = client
            .get(url(e.position))
            .bearer_auth(&token)
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("as_of answered {}: {}", res.status(), res.text().await?);
        }
        res.bytes().await?;
        lat.push(t.elapsed());
    }
    Ok(summarize(lat, started.elapsed()))
}

/// Loads `n` events spread over rollout streams of 50 teams and 200 actors.
async fn load_log(store: &dyn EventStore, n: usize) -> anyhow::Result<()> {
    let mut written = 0;
    let mut versions = vec![0u64; 1000];
    while written < n {
        let stream_no = (written / 1000) % versions.len();
        let team = format!("team-{}", stream_no % 50);
        let count = 1000.min(n - written);
        let batch: Vec<EventData> = (0..count)
            .map(|i| {
                let actor = format!("user-{}", (written + i) % 200);
                stored(&note((written + i) as u64), &actor, &team)
            })
            .collect();
        let stream = format!("rollout-{}", Uuid::from_u128(stream_no as u128 + 1));
        versions[stream_no] = store
            .append(&stream, ExpectedVersion::Exact(versions[stream_no]), batch)
            .await?
            .stream_version;
        written += count;
    }
    Ok(())
}

async fn audit_queries(server: &Server, n: usize) -> anyhow::Result<Latencies> {
    let token = server.token(&["auditor"], &["*"])?;
    let client = reqwest::Client::new();
    let mut lat = Vec::new();
    let started = Instant::now();
    for i in 0..n {
        let url = format!(
            "{}/v1/audit?actor=user-{}&team=team-{}&event_type=NoteAdded&limit=100",
            server.address,
            i % 200,
            i % 50
        );
        let t = Instant::now();
        let res = client.get(&url).bearer_auth(&token).send().await?;
        if !res.status().is_success() {
            bail!("audit answered {}: {}", res.status(), res.text().await?);
        }
        res.bytes().await?;
        lat.push(t.elapsed());
    }
    Ok(summarize(lat, started.elapsed()))
}

async fn export_rate(server: &Server, expected: usize) -> anyhow::Result<f64> {
    use futures::StreamExt;
    let token = server.token(&["auditor"], &["*"])?;
    let started = Instant::now();
    let res = reqwest::Client::new()
        .get(format!("{}/v1/audit/export?format=ndjson", server.address))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?;
    let mut lines = 0usize;
    let mut body = res.bytes_stream();
    while let Some(chunk) = body.next().await {
        lines += chunk?.iter().filter(|b| **b == b'\n').count();
    }
    if lines < expected {
        bail!("export gave {lines} lines, expected at least {expected}");
    }
    Ok(lines as f64 / started.elapsed().as_secs_f64())
}

async fn wait_projected(store: &dyn EventStore, timeout: Duration) -> anyhow::Result<()> {
    let head = store.head().await?.position;
    let deadline = Instant::now() + timeout;
    while rollgate_projections::projected_position(&store.pool()).await? < head {
        if Instant::now() > deadline {
            bail!("projections did not catch up with {head} in {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn row(what: &str, kind: BackendKind, result: String, ratio: Option<f64>, l: Option<&Latencies>) {
    let ratio = ratio
        .map(|r| format!("{r:.2}x"))
        .unwrap_or_else(|| "–".into());
    let (p50, p99) = l
        .map(|l| (format!("{:.2}", l.p50_ms), format!("{:.2}", l.p99_ms)))
        .unwrap_or_else(|| ("–".into(), "–".into()));
    println!("| {what} | {kind:?} | {result} | {ratio} | {p50} | {p99} |");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let binary = match &args.rollgate {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("rollgate"),
    };
    if !binary.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p rollgate-server`",
            binary.display()
        );
    }
    let baseline_db = TestDb::postgres().await;
    let baseline = pgbench_baseline(&baseline_db.url, args.clients, args.seconds)?;
    drop(baseline_db);
    println!(
        "Baseline: pgbench, {} clients, single-row INSERT transactions: **{baseline:.0} tps**\n",
        args.clients
    );
    println!("| measurement | backend | result | ratio to baseline | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    let kinds: Vec<BackendKind> = [BackendKind::Postgres, BackendKind::Sqlite]
        .into_iter()
        .filter(|k| {
            let name = format!("{k:?}").to_lowercase();
            args.backends.iter().any(|b| b.eq_ignore_ascii_case(&name))
        })
        .collect();
    for kind in kinds {
        {
            let db = TestDb::new(kind).await;
            let store = db
                .store(StoreOptions {
                    max_connections: 40,
                    ..Default::default()
                })
                .await;
            let l = store_appends(store.clone(), args.clients, args.seconds).await;
            let what = format!("store appends, {} writers, 1 event each", args.clients);
            row(
                &what,
                kind,
                format!("{:.0} events/s", l.per_second),
                Some(l.per_second / baseline),
                Some(&l),
            );
        }
        {
            let db = TestDb::new(kind).await;
            let store = db.store(StoreOptions::default()).await;
            let server = Server::start(&binary, &db.url).await?;
            let l = http_commands(&server, args.clients, args.seconds).await?;
            let what = format!("governance commands over HTTP, {} clients", args.clients);
            row(
                &what,
                kind,
                format!("{:.0} events/s", l.per_second),
                Some(l.per_second / baseline),
                Some(&l),
            );
            let l = as_of_latency(&server, &*store).await?;
            row(
                "`as_of` on a 10,000-event stream",
                kind,
                format!("p99 {:.2} ms", l.p99_ms),
                None,
                Some(&l),
            );
        }
        if args.log_events > 0 {
            let db = TestDb::new(kind).await;
            let store = db.store(StoreOptions::default()).await;
            let t = Instant::now();
            load_log(&*store, args.log_events).await?;
            let load = args.log_events as f64 / t.elapsed().as_secs_f64();
            row(
                &format!("bulk load, batches of 1,000 ({} events)", args.log_events),
                kind,
                format!("{load:.0} events/s"),
                Some(load / baseline),
                None,
            );

            let t = Instant::now();
            let report = rollgate_store::verify(&*store, None).await?;
            if !report.is_ok() {
                bail!("verification failed: {report:?}");
            }
            let rate = args.log_events as f64 / t.elapsed().as_secs_f64();
            row(
                &format!("verify ({} events)", args.log_events),
                kind,
                format!("{rate:.0} events/s"),
                Some(rate / baseline),
                None,
            );

            let t = Instant::now();
            rollgate_projections::rebuild(store.clone(), None).await?;
            let rate = args.log_events as f64 / t.elapsed().as_secs_f64();
            row(
                &format!(
                    "projection rebuild, all read models ({} events)",
                    args.log_events
                ),
                kind,
                format!("{rate:.0} events/s"),
                Some(rate / baseline),
                None,
            );

            let server = Server::start(&binary, &db.url).await?;
            wait_projected(&*store, Duration::from_secs(600)).await?;
            let l = audit_queries(&server, 300).await?;
            row(
                &format!(
                    "audit query, 3 filters, one page of 100 ({} events)",
                    args.log_events
                ),
                kind,
                format!("p99 {:.2} ms", l.p99_ms),
                None,
                Some(&l),
            );
            let rate = export_rate(&server, args.log_events).await?;
            row(
                &format!("audit export, NDJSON streamed ({} events)", args.log_events),
                kind,
                format!("{rate:.0} events/s"),
                Some(rate / baseline),
                None,
            );
            if let Some(mib) = server.rss_mib() {
                row(
                    &format!(
                        "server RSS after the above ({} events stored)",
                        args.log_events
                    ),
                    kind,
                    format!("{mib:.0} MiB"),
                    None,
                    None,
                );
            }
        }
    }
    Ok(())
}
