//! `rollgate-bench`: measures rollgate against a raw PostgreSQL baseline taken in the same run.
//!
//! Baseline: pgbench, `--clients` connections, one single-row INSERT per transaction (with its
//! WAL bytes per transaction and, sampled, PostgreSQL's CPU per transaction). Then, for
//! PostgreSQL and SQLite, each on fresh databases: store appends (group commit) from
//! concurrent writers; governance commands over HTTP against the real `rollgate` binary —
//! notes at each client count of `--sweep`, then a realistic command mix (`mix.rs`) — each
//! window with CPU per command of the server, PostgreSQL and the load generator from `/proc`
//! and WAL bytes per event (`cpu.rs`), and on SQLite the checkpoints seen during the window
//! (`sqlite_wal.rs`); `as_of` reconstruction of a 10,000-event stream; and on a log of
//! `--log-events` events: chain verification, projection rebuild, a filtered audit query
//! through HTTP, the streamed audit export, and the server's resident memory. Every load loop
//! is bounded in time and stays on the loopback interface. The targets of DESIGN.md and of
//! issue 15 are printed at the end, each met or not met.
//!
//! Build both binaries first: `cargo build --release -p rollgate-server -p rollgate-bench`.
//! `--smoke` runs every part briefly and small (1 s windows, 4 clients, 2,000 log events): a
//! check that the benchmark works, not a measurement.

mod cpu;
mod mix;
mod sqlite_wal;

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

use cpu::{PgProbe, Usage};

#[derive(Parser)]
struct Args {
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients (the baseline, store appends, the command mix, and the HTTP notes
    /// level the targets are judged at).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Client counts of the HTTP notes sweep (`--clients` is added when missing).
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    sweep: Vec<usize>,
    /// Events in the log for verify, rebuild, audit query, export and memory (0 skips them).
    #[arg(long, default_value_t = 1_000_000)]
    log_events: usize,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "postgres,sqlite")]
    backends: Vec<String>,
    /// The `rollgate` binary (default: beside this one).
    #[arg(long)]
    rollgate: Option<PathBuf>,
    /// Every part, briefly: 1 s windows, 4 clients, sweep 1 and 4, 2,000 log events.
    #[arg(long)]
    smoke: bool,
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

/// A PostgreSQL client program (`psql`, `pgbench`): from `PATH`, else from the folder of
/// PostgreSQL's binaries the tests use (`ROLLGATE_PG_BINDIR`, else the newest
/// /usr/lib/postgresql/<v>/bin).
fn pg_client(program: &str) -> Command {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    if on_path {
        Command::new(program)
    } else {
        Command::new(rollgate_testkit::tools::pg_bindir().join(program))
    }
}

/// libpq knows nothing of sqlx's URL options.
fn libpq_url(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// What the baseline measured.
struct Baseline {
    tps: f64,
    wal_per_tx: Option<f64>,
    /// PostgreSQL backends' CPU per transaction, sampled while pgbench ran (µs).
    pg_us_per_tx: Option<f64>,
}

/// pgbench: `clients` connections, each transaction one single-row INSERT. While it runs, the
/// CPU time of its backends is read every 100 ms from the first second on (the last reading
/// before each backend exits is kept, so up to 100 ms of each backend's work is missed), and
/// divided by the transactions of that span at the run's rate.
async fn pgbench_baseline(url: &str, clients: usize, seconds: u64) -> anyhow::Result<Baseline> {
    let probe = PgProbe::connect(url).await?;
    let url = libpq_url(url);
    let setup = pg_client("psql")
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
    let wal_before = probe.wal_lsn().await?;
    let mut child = pg_client("pgbench")
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
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("pgbench is needed for the baseline")?;
    tokio::time::sleep(Duration::from_millis(1000.min(seconds * 500))).await;
    let pids = probe.backend_pids().await?;
    let first: std::collections::HashMap<u32, u64> = pids
        .iter()
        .filter_map(|&p| cpu::process_ticks(p).map(|t| (p, t)))
        .collect();
    let sampled_from = Instant::now();
    let mut last = first.clone();
    let mut sampled_to = sampled_from;
    while child.try_wait()?.is_none() {
        for (pid, t) in last.iter_mut() {
            if let Some(now) = cpu::process_ticks(*pid) {
                *t = now;
            }
        }
        sampled_to = Instant::now();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = child.wait_with_output()?;
    let wal_after = probe.wal_lsn().await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<f64>().ok())
        .with_context(|| format!("no tps in pgbench output: {text}"))?;
    let transactions = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("number of transactions actually processed: ")
        })
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.trim().parse::<f64>().ok());
    let ticks: u64 = last.iter().map(|(p, t)| t - first[p]).sum();
    let span = (sampled_to - sampled_from).as_secs_f64();
    Ok(Baseline {
        tps,
        wal_per_tx: transactions.map(|n| (wal_after - wal_before) as f64 / n),
        pg_us_per_tx: (span > 0.0 && !first.is_empty())
            .then(|| ticks as f64 / cpu::clk_tck() * 1e6 / (tps * span)),
    })
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

/// `clients` writers appending one event per call to their own streams, until `deadline`.
async fn store_appends(
    store: Arc<dyn EventStore>,
    clients: usize,
    deadline: Instant,
) -> anyhow::Result<Vec<(Instant, Duration)>> {
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
                    lat.push((t, t.elapsed()));
                    n += 1;
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    Ok(all)
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
        self.token_of("bench", roles, teams)
    }

    fn token_of(&self, sub: &str, roles: &[&str], teams: &[&str]) -> anyhow::Result<String> {
        Ok(self.keys.mint(rollgate_auth::MintRequest {
            sub: sub.into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            teams: teams.iter().map(|s| s.to_string()).collect(),
            ttl_seconds: 3600,
            now: chrono::Utc::now().timestamp(),
            issuer: "rollgate".into(),
            audience: "rollgate".into(),
        })?)
    }

    fn pid(&self) -> u32 {
        self.child.id()
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

/// One measured load window.
struct Phase {
    what: String,
    kind: BackendKind,
    clients: usize,
    requests: usize,
    events: u64,
    elapsed: Duration,
    lat: Latencies,
    usage: Usage,
    /// The server is the benchmark process itself (store appends).
    in_process: bool,
    stalls: Option<sqlite_wal::Stalls>,
    /// Shares of the PostgreSQL backends' states, sampled every 20 ms.
    pg_states: Vec<(String, f64)>,
}

impl Phase {
    fn per_command_us(&self, seconds: f64) -> f64 {
        seconds * 1e6 / self.requests.max(1) as f64
    }

    fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    fn pg_total_us(&self) -> Option<f64> {
        Some(self.per_command_us(self.usage.pg_backends_s? + self.usage.pg_background_s?))
    }

    fn states_line(&self) -> Option<String> {
        if self.pg_states.is_empty() {
            return None;
        }
        let top: Vec<String> = self
            .pg_states
            .iter()
            .take(6)
            .map(|(s, share)| format!("{s} {:.0} %", share * 100.0))
            .collect();
        Some(format!(
            "- {}, {:?}, {} clients: {}",
            self.what,
            self.kind,
            self.clients,
            top.join(", ")
        ))
    }

    fn detail_row(&self) -> String {
        let us = |s: Option<f64>| {
            s.map(|s| format!("{:.0}", self.per_command_us(s)))
                .unwrap_or_else(|| "–".into())
        };
        let server = if self.in_process {
            "in the load generator".to_owned()
        } else {
            us(Some(self.usage.server_s))
        };
        let wal = match self.usage.wal_bytes {
            Some(b) => format!("{:.0}", b as f64 / self.events.max(1) as f64),
            None => "–".into(),
        };
        let backends = match self.usage.pg_backends_s {
            Some(_) if self.usage.pg_vanished > 0 => format!(
                "{} ({} of {} backends gone)",
                us(self.usage.pg_backends_s),
                self.usage.pg_vanished,
                self.usage.pg_counted + self.usage.pg_vanished
            ),
            Some(_) => format!(
                "{} ({} backends)",
                us(self.usage.pg_backends_s),
                self.usage.pg_counted
            ),
            None => "–".into(),
        };
        // Whole machine minus everything named: other processes (builds, tests, other
        // databases' work) sharing the machine during the window.
        let u = &self.usage;
        let named = if self.in_process { 0.0 } else { u.server_s }
            + u.pg_backends_s.unwrap_or(0.0)
            + u.pg_background_s.unwrap_or(0.0)
            + u.bench_s;
        let other = us(Some((u.machine_s - named).max(0.0)));
        format!(
            "| {} | {:?} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} |",
            self.what,
            self.kind,
            self.clients,
            self.lat.per_second,
            self.events_per_second(),
            self.lat.p50_ms,
            self.lat.p99_ms,
            server,
            backends,
            us(self.usage.pg_background_s),
            us(Some(self.usage.bench_s)),
            us(Some(self.usage.machine_s)),
            other,
            wal,
        )
    }
}

const DETAIL_HEADER: &str = "| phase | backend | clients | requests/s | events/s | p50 ms | p99 ms \
| server µs/cmd | PostgreSQL backends µs/cmd | PostgreSQL WAL writer + checkpointer + bgwriter µs/cmd \
| load generator µs/cmd | whole machine µs/cmd | of which other work µs/cmd | WAL bytes/event |\n\
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

/// What a window needs to be measured: the server's pid, the database's probe (PostgreSQL),
/// the SQLite file (to watch its checkpoints), and a store to read the head from.
struct Meter<'a> {
    pid: u32,
    probe: Option<&'a PgProbe>,
    sqlite: Option<PathBuf>,
    store: &'a dyn EventStore,
}

/// Runs `load` as one window and measures it; `load` answers each request's start and
/// latency.
async fn measure<L, F>(
    meter: &Meter<'_>,
    what: String,
    kind: BackendKind,
    clients: usize,
    seconds: u64,
    load: L,
) -> anyhow::Result<Phase>
where
    L: FnOnce(Instant) -> F,
    F: std::future::Future<Output = anyhow::Result<Vec<(Instant, Duration)>>>,
{
    let head = meter.store.head().await?.position;
    let watch = match &meter.sqlite {
        Some(db) => Some(sqlite_wal::WalWatch::start(db)?),
        None => None,
    };
    let before = cpu::snapshot(meter.pid, meter.probe).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let sampler = meter
        .probe
        .cloned()
        .map(|probe| tokio::spawn(async move { probe.sample_states(stopped).await }));
    let started = Instant::now();
    let timed = load(started + Duration::from_secs(seconds)).await?;
    let elapsed = started.elapsed();
    let after = cpu::snapshot(meter.pid, meter.probe).await?;
    let _ = stop.send(true);
    let pg_states = match sampler {
        Some(s) => s.await?,
        None => Vec::new(),
    };
    let checkpoints = watch.map(|w| w.finish());
    let events = meter.store.head().await?.position - head;
    let stalls = checkpoints.map(|c| sqlite_wal::explain(&c, &timed, Duration::from_millis(50)));
    Ok(Phase {
        what,
        kind,
        clients,
        requests: timed.len(),
        events,
        elapsed,
        lat: summarize(timed.iter().map(|(_, l)| *l).collect(), elapsed),
        usage: cpu::usage(&before, &after, meter.probe.is_some()),
        in_process: meter.pid == std::process::id(),
        stalls,
        pg_states,
    })
}

/// `clients` clients each adding notes (a full governance command: authenticate, load,
/// decide, append) to a rollout of their own, until `deadline`.
async fn http_notes(
    server: &Server,
    ids: Vec<String>,
    deadline: Instant,
) -> anyhow::Result<Vec<(Instant, Duration)>> {
    let token = server.token(&["release_manager"], &["web"])?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(ids.len())
        .build()?;
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
                    lat.push((t, t.elapsed()));
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    Ok(all)
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

/// One line of the targets table.
struct Target {
    what: String,
    result: String,
    met: bool,
}

fn target(targets: &mut Vec<Target>, what: impl Into<String>, result: String, met: bool) {
    targets.push(Target {
        what: what.into(),
        result,
        met,
    });
}

/// Creates `n` rollouts for the notes of one window.
async fn rollouts(server: &Server, first: usize, n: usize) -> anyhow::Result<Vec<String>> {
    let token = server.token(&["release_manager"], &["web"])?;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in first..first + n {
        ids.push(create_rollout(&client, server, &token, i).await?);
    }
    Ok(ids)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.seconds = 1;
        args.clients = 4;
        args.sweep = vec![1, 4];
        args.log_events = args.log_events.min(2_000);
    }
    let mut sweep = args.sweep.clone();
    sweep.push(args.clients);
    sweep.sort_unstable();
    sweep.dedup();
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
    let base = pgbench_baseline(&baseline_db.url, args.clients, args.seconds).await?;
    drop(baseline_db);
    let baseline = base.tps;
    if args.smoke {
        println!("Smoke run (--smoke): every part briefly; the figures are not measurements.\n");
    }
    println!(
        "Baseline: pgbench, {} clients, single-row INSERT transactions: **{baseline:.0} tps**",
        args.clients
    );
    println!(
        "(WAL {} bytes per transaction; PostgreSQL backends ≈{} µs of CPU per transaction, sampled)\n",
        base.wal_per_tx
            .map(|w| format!("{w:.0}"))
            .unwrap_or_else(|| "?".into()),
        base.pg_us_per_tx
            .map(|w| format!("{w:.0}"))
            .unwrap_or_else(|| "?".into()),
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
    let clients = args.clients;
    let mut details: Vec<String> = Vec::new();
    let mut by_kind: Vec<String> = Vec::new();
    let mut stalls: Vec<String> = Vec::new();
    let mut states: Vec<String> = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    for kind in kinds {
        let pg = kind == BackendKind::Postgres;
        {
            let db = TestDb::new(kind).await;
            let store = db
                .store(StoreOptions {
                    max_connections: 40,
                    ..Default::default()
                })
                .await;
            let probe = match pg {
                true => Some(PgProbe::connect(&db.url).await?),
                false => None,
            };
            let meter = Meter {
                pid: std::process::id(),
                probe: probe.as_ref(),
                sqlite: None,
                store: &*store,
            };
            let what = format!("store appends, {clients} writers, 1 event each");
            let phase = measure(&meter, what.clone(), kind, clients, args.seconds, |d| {
                store_appends(store.clone(), clients, d)
            })
            .await?;
            let rate = phase.events_per_second();
            row(
                &what,
                kind,
                format!("{rate:.0} events/s"),
                Some(rate / baseline),
                Some(&phase.lat),
            );
            details.push(phase.detail_row());
            states.extend(phase.states_line());
        }
        {
            let db = TestDb::new(kind).await;
            let store = db
                .store(StoreOptions {
                    application_name: "rollgate-bench".into(),
                    ..Default::default()
                })
                .await;
            let server = Server::start(&binary, &db.url).await?;
            let probe = match pg {
                true => Some(PgProbe::connect(&db.url).await?),
                false => None,
            };
            let meter = Meter {
                pid: server.pid(),
                probe: probe.as_ref(),
                sqlite: db.dir().map(|d| d.join("rollgate.db")),
                store: &*store,
            };
            let mut created = 0;
            for &c in &sweep {
                let ids = rollouts(&server, created, c).await?;
                created += c;
                let phase = measure(&meter, "notes".into(), kind, c, args.seconds, |d| {
                    http_notes(&server, ids, d)
                })
                .await?;
                eprintln!("measured: {}", phase.detail_row());
                if let Some(st) = &phase.stalls {
                    stalls.push(format!("- {kind:?}, notes, {c} clients: {st}"));
                }
                if c == clients {
                    let rate = phase.events_per_second();
                    row(
                        &format!("governance commands over HTTP (notes), {c} clients"),
                        kind,
                        format!("{rate:.0} events/s"),
                        Some(rate / baseline),
                        Some(&phase.lat),
                    );
                    if pg {
                        target(
                            &mut targets,
                            format!("notes over HTTP ≥ 0.5× baseline (aim > 1×), {c} clients"),
                            format!("{:.2}×", rate / baseline),
                            rate / baseline >= 0.5,
                        );
                        target(
                            &mut targets,
                            format!("notes over HTTP p99 < 20 ms, {c} clients"),
                            format!(
                                "p99 {:.1} ms (p50 {:.1})",
                                phase.lat.p99_ms, phase.lat.p50_ms
                            ),
                            phase.lat.p99_ms < 20.0,
                        );
                        let server_us = phase.per_command_us(phase.usage.server_s);
                        target(
                            &mut targets,
                            format!("server CPU ≤ 150 µs per command (notes, {c} clients)"),
                            format!("{server_us:.0} µs"),
                            server_us <= 150.0,
                        );
                        let backends =
                            phase.per_command_us(phase.usage.pg_backends_s.unwrap_or(0.0));
                        let total = phase.pg_total_us().unwrap_or(f64::NAN);
                        target(
                            &mut targets,
                            format!(
                                "PostgreSQL CPU ≤ 200 µs per command (notes, {c} clients; \
                                 backends + WAL writer, checkpointer, bgwriter)"
                            ),
                            format!("{total:.0} µs ({backends:.0} backends)"),
                            total <= 200.0,
                        );
                    } else {
                        target(
                            &mut targets,
                            format!("SQLite: notes over HTTP p99 < 50 ms, {c} clients"),
                            format!(
                                "p99 {:.1} ms (p50 {:.1})",
                                phase.lat.p99_ms, phase.lat.p50_ms
                            ),
                            phase.lat.p99_ms < 50.0,
                        );
                    }
                }
                details.push(phase.detail_row());
                states.extend(phase.states_line());
            }

            let people = mix::People {
                release_manager: server.token_of("bench-rm", &["release_manager"], &["web"])?,
                sre: server.token_of("bench-sre", &["sre"], &["web"])?,
                approvers: [
                    server.token_of("bench-approver-1", &["approver"], &["web"])?,
                    server.token_of("bench-approver-2", &["approver"], &["web"])?,
                ],
                automation: server.token_of("bench-bot", &["service"], &["web"])?,
            };
            let kinds_seen = std::sync::Mutex::new(mix::Timed::new());
            let kinds_seen_ref = &kinds_seen;
            let address = &server.address;
            let phase = measure(
                &meter,
                "command mix".into(),
                kind,
                clients,
                args.seconds,
                |d| async move {
                    let timed = mix::run(address, people, clients, d).await?;
                    let plain = timed.iter().map(|(_, t, l)| (*t, *l)).collect();
                    *kinds_seen_ref.lock().expect("mix") = timed;
                    Ok(plain)
                },
            )
            .await?;
            eprintln!("measured: {}", phase.detail_row());
            let rate = phase.events_per_second();
            row(
                &format!("governance command mix over HTTP, {clients} clients"),
                kind,
                format!("{:.0} requests/s, {rate:.0} events/s", phase.lat.per_second),
                Some(rate / baseline),
                Some(&phase.lat),
            );
            if pg {
                target(
                    &mut targets,
                    format!("command mix over HTTP ≥ 0.5× baseline, {clients} clients (events/s)"),
                    format!("{:.2}×", rate / baseline),
                    rate / baseline >= 0.5,
                );
                target(
                    &mut targets,
                    format!("command mix over HTTP p99 < 20 ms, {clients} clients"),
                    format!(
                        "p99 {:.1} ms (p50 {:.1})",
                        phase.lat.p99_ms, phase.lat.p50_ms
                    ),
                    phase.lat.p99_ms < 20.0,
                );
                let server_us = phase.per_command_us(phase.usage.server_s);
                let total = phase.pg_total_us().unwrap_or(f64::NAN);
                target(
                    &mut targets,
                    "command mix: server CPU ≤ 150 µs, PostgreSQL ≤ 200 µs per command",
                    format!("server {server_us:.0} µs, PostgreSQL {total:.0} µs"),
                    server_us <= 150.0 && total <= 200.0,
                );
            }
            if let Some(st) = &phase.stalls {
                stalls.push(format!("- {kind:?}, command mix, {clients} clients: {st}"));
            }
            details.push(phase.detail_row());
            states.extend(phase.states_line());
            let timed = kinds_seen.into_inner().expect("mix");
            for (k, lat) in mix::by_kind(&timed) {
                let n = lat.len();
                let l = summarize(lat, phase.elapsed);
                by_kind.push(format!(
                    "| {} | {kind:?} | {n} | {:.0} | {:.2} | {:.2} |",
                    mix::KINDS[k],
                    l.per_second,
                    l.p50_ms,
                    l.p99_ms
                ));
            }

            let l = as_of_latency(&server, &*store).await?;
            row(
                "`as_of` on a 10,000-event stream",
                kind,
                format!("p99 {:.2} ms", l.p99_ms),
                None,
                Some(&l),
            );
            if pg {
                target(
                    &mut targets,
                    "`as_of` on a 10,000-event stream < 10 ms (p99)",
                    format!("p99 {:.1} ms (p50 {:.1})", l.p99_ms, l.p50_ms),
                    l.p99_ms < 10.0,
                );
            }
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
            if pg {
                target(
                    &mut targets,
                    "verify ≥ 500,000 events/s",
                    format!("{rate:.0}"),
                    rate >= 500_000.0,
                );
            }

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
            if pg {
                target(
                    &mut targets,
                    "projection rebuild ≥ 100,000 events/s",
                    format!("{rate:.0}"),
                    rate >= 100_000.0,
                );
            }

            let server = Server::start(&binary, &db.url).await?;
            wait_projected(&*store, Duration::from_secs(600)).await?;
            let l = audit_queries(&server, if args.smoke { 20 } else { 300 }).await?;
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
            if pg {
                target(
                    &mut targets,
                    format!("audit query p99 < 50 ms ({} events)", args.log_events),
                    format!("p99 {:.1} ms (p50 {:.1})", l.p99_ms, l.p50_ms),
                    l.p99_ms < 50.0,
                );
            }
            let rate = export_rate(&server, args.log_events).await?;
            row(
                &format!("audit export, NDJSON streamed ({} events)", args.log_events),
                kind,
                format!("{rate:.0} events/s"),
                Some(rate / baseline),
                None,
            );
            if pg {
                target(
                    &mut targets,
                    "audit export ≥ 200,000 events/s",
                    format!("{rate:.0}"),
                    rate >= 200_000.0,
                );
            }
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
                if pg {
                    target(
                        &mut targets,
                        format!("server RSS < 100 MB ({} events stored)", args.log_events),
                        format!("{mib:.0} MiB"),
                        mib * 1.048_576 < 100.0,
                    );
                }
            }
        }
    }
    println!("\n### Load windows: throughput, latency, CPU per command, WAL per event\n");
    println!("{DETAIL_HEADER}");
    for d in &details {
        println!("{d}");
    }
    if !by_kind.is_empty() {
        println!("\n### The command mix by command\n");
        println!("| command | backend | requests | requests/s | p50 ms | p99 ms |");
        println!("|---|---|---|---|---|---|");
        for l in &by_kind {
            println!("{l}");
        }
    }
    if !states.is_empty() {
        println!(
            "\n### What the PostgreSQL backends were doing (sampled every 20 ms, share of \
             backend samples)\n"
        );
        for l in &states {
            println!("{l}");
        }
    }
    if !stalls.is_empty() {
        println!("\n### SQLite checkpoints during the HTTP windows\n");
        for l in &stalls {
            println!("{l}");
        }
    }
    println!("\n### Against the targets\n");
    println!("| target | result | |");
    println!("|---|---|---|");
    for t in &targets {
        println!(
            "| {} | {} | {} |",
            t.what,
            t.result,
            if t.met { "met" } else { "not met" }
        );
    }
    println!(
        "| store appends ≥ 2× postgres-es, {clients} writers | not measured: postgres-es is not \
         in rollgate-bench | not met |"
    );
    Ok(())
}
