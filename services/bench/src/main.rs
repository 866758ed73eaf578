//! `rollgate-bench`: measures rollgate against a raw PostgreSQL baseline taken in the same run.
//!
//! Baseline: pgbench, 32 clients, one single-row INSERT per transaction. Then, on a fresh
//! database per measurement: store appends (group commit) from 32 concurrent writers,
//! governance commands over HTTP from 32 clients, chain verification, and `as_of`
//! reconstruction of a 10,000-event stream. SQLite figures are measured beside. Every load
//! loop is bounded in time and stays on the loopback interface.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rollgate_store::{BackendKind, EventData, EventStore, ExpectedVersion, StoreOptions};
use rollgate_testkit::TestDb;
use serde_json::json;
use uuid::Uuid;

#[derive(Parser)]
struct Args {
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Events loaded for the verify measurement.
    #[arg(long, default_value_t = 200_000)]
    verify_events: usize,
}

struct Throughput {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn summarize(mut latencies: Vec<Duration>, count: usize, elapsed: Duration) -> Throughput {
    latencies.sort_unstable();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    Throughput {
        per_second: count as f64 / elapsed.as_secs_f64(),
        p50_ms: pick(0.50),
        p99_ms: pick(0.99),
    }
}

/// pgbench: `clients` connections, each transaction one single-row INSERT.
fn pgbench_baseline(url: &str, clients: usize, seconds: u64) -> anyhow::Result<f64> {
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
            "-f",
            script.path().to_str().unwrap(),
            url,
        ])
        .output()
        .context("pgbench is needed for the baseline")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench output: {text}"))?;
    Ok(tps)
}

fn one_event(n: u64) -> EventData {
    EventData {
        id: Uuid::new_v4(),
        event_type: "NoteAdded".into(),
        schema_version: 1,
        payload: json!({ "audience": "internal", "text": format!("note {n}"), "at": "2026-03-01T09:00:00Z" }),
        metadata: json!({ "actor": { "id": "bench", "roles": ["release_manager"] }, "team": "web" }),
    }
}

/// `clients` writers appending one event per call to their own streams.
async fn store_appends(store: Arc<dyn EventStore>, clients: usize, seconds: u64) -> Throughput {
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
                    store
                        .append(
                            &format!("bench-{c}"),
                            ExpectedVersion::Any,
                            vec![one_event(n)],
                        )
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
    let count = all.len();
    summarize(all, count, started.elapsed())
}

/// Loads `n` events in batches, then times a full chain verification.
async fn verify_rate(store: Arc<dyn EventStore>, n: usize) -> anyhow::Result<f64> {
    let mut written = 0;
    while written < n {
        let batch: Vec<EventData> = (0..1000.min(n - written))
            .map(|i| one_event(i as u64))
            .collect();
        written += batch.len();
        store
            .append(
                &format!("load-{}", written / 50_000),
                ExpectedVersion::Any,
                batch,
            )
            .await?;
    }
    let t = Instant::now();
    let report = rollgate_store::verify(&*store, None).await?;
    let elapsed = t.elapsed();
    if !report.is_ok() {
        bail!("verification failed: {report:?}");
    }
    Ok(n as f64 / elapsed.as_secs_f64())
}

struct Server {
    address: String,
    keys: rollgate_auth::DevKeys,
    _dir: tempfile::TempDir,
}

async fn start_server(url: &str) -> anyhow::Result<Server> {
    #[derive(Parser)]
    struct ServeOnly {
        #[command(flatten)]
        serve: rollgate_server::config::ServeArgs,
    }
    let dir = tempfile::tempdir()?;
    let args = ServeOnly::parse_from([
        "rollgate",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        url,
        "--dev-key-dir",
        dir.path().to_str().unwrap(),
        "--db-max-connections",
        "40",
    ]);
    let app =
        rollgate_server::Application::build(&args.serve, Arc::new(rollgate_store::SystemClock))
            .await?;
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let keys = rollgate_auth::DevKeys::load_or_create(dir.path())?;
    Ok(Server {
        address,
        keys,
        _dir: dir,
    })
}

fn token(keys: &rollgate_auth::DevKeys) -> anyhow::Result<String> {
    Ok(keys.mint(rollgate_auth::MintRequest {
        sub: "bench".into(),
        roles: vec!["release_manager".into(), "sre".into(), "approver".into()],
        teams: vec!["web".into()],
        ttl_seconds: 3600,
        now: chrono::Utc::now().timestamp(),
        issuer: "rollgate".into(),
        audience: "rollgate".into(),
    })?)
}

fn create_body(i: usize) -> serde_json::Value {
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
    let res: serde_json::Value = client
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

/// `clients` clients each adding notes (a full governance command: load, decide, append)
/// to a rollout of their own.
async fn http_commands(
    server: &Server,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<Throughput> {
    let token = token(&server.keys)?;
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
                    assert_eq!(res.status().as_u16(), 201, "{:?}", res.text().await);
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
    let count = all.len();
    Ok(summarize(all, count, started.elapsed()))
}

/// Builds a 10,000-event rollout stream and times `GET /v1/rollouts/{id}?as_of=…`.
async fn as_of_latency(server: &Server, store: Arc<dyn EventStore>) -> anyhow::Result<f64> {
    let token = token(&server.keys)?;
    let client = reqwest::Client::new();
    let id = create_rollout(&client, server, &token, 9999).await?;
    let stream = format!("rollout-{id}");
    let md = json!({ "actor": { "id": "bench", "roles": ["release_manager"] }, "team": "web" });
    let mut version = store.stream_version(&stream).await?;
    while version < 10_000 {
        let n = (10_000 - version).min(1000);
        let batch: Vec<EventData> = (0..n)
            .map(|_| EventData {
                id: Uuid::new_v4(),
                event_type: "NoteAdded".into(),
                schema_version: 1,
                payload: json!({ "audience": "internal", "text": "status update", "added_by": "bench", "at": "2026-03-01T09:00:00Z" }),
                metadata: md.clone(),
            })
            .collect();
        version = store
            .append(&stream, ExpectedVersion::Exact(version), batch)
            .await?
            .stream_version;
    }
    let head = store.head().await?.position;
    let url = format!("{}/v1/rollouts/{id}?as_of={}", server.address, head - 1);
    let mut lat = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let res = client.get(&url).bearer_auth(&token).send().await?;
        if !res.status().is_success() {
            bail!("as_of answered {}: {}", res.status(), res.text().await?);
        }
        res.bytes().await?;
        lat.push(t.elapsed());
    }
    lat.sort_unstable();
    Ok(lat[lat.len() / 2].as_secs_f64() * 1000.0)
}

async fn fresh_store(kind: BackendKind, db: &TestDb) -> Arc<dyn EventStore> {
    db.store(StoreOptions {
        max_connections: 40,
        ..Default::default()
    })
    .await
    .clone()
    .tap(kind)
}

trait Tap {
    fn tap(self, kind: BackendKind) -> Self;
}
impl Tap for Arc<dyn EventStore> {
    fn tap(self, kind: BackendKind) -> Self {
        eprintln!("measuring on {kind:?}");
        self
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let baseline_db = TestDb::postgres().await;
    let baseline = pgbench_baseline(&baseline_db.url, args.clients, args.seconds)?;
    drop(baseline_db);
    println!("## Baseline\n");
    println!(
        "pgbench, {} clients, single-row INSERT transactions: {baseline:.0} tps\n",
        args.clients
    );
    println!("| measurement | backend | result | ratio to baseline | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    for kind in [BackendKind::Postgres, BackendKind::Sqlite] {
        let db = TestDb::new(kind).await;
        let store = fresh_store(kind, &db).await;
        let t = store_appends(store.clone(), args.clients, args.seconds).await;
        println!(
            "| store appends, {} writers | {kind:?} | {:.0} events/s | {:.2}x | {:.2} | {:.2} |",
            args.clients,
            t.per_second,
            t.per_second / baseline,
            t.p50_ms,
            t.p99_ms
        );
        drop(store);

        let db = TestDb::new(kind).await;
        drop(db.store(StoreOptions::default()).await);
        let server = start_server(&db.url).await?;
        let t = http_commands(&server, args.clients, args.seconds).await?;
        println!(
            "| governance commands over HTTP, {} clients | {kind:?} | {:.0} events/s | {:.2}x | {:.2} | {:.2} |",
            args.clients,
            t.per_second,
            t.per_second / baseline,
            t.p50_ms,
            t.p99_ms
        );
        let store = db.store(StoreOptions::default()).await;
        let ms = as_of_latency(&server, store).await?;
        println!("| as_of reconstruction, 10,000-event stream (median of 20) | {kind:?} | {ms:.1} ms | – | – | – |");

        let db = TestDb::new(kind).await;
        let store = db.store(StoreOptions::default()).await;
        let rate = verify_rate(store, args.verify_events).await?;
        println!(
            "| verify, {} events | {kind:?} | {rate:.0} events/s | {:.2}x | – | – |",
            args.verify_events,
            rate / baseline
        );
    }
    Ok(())
}
