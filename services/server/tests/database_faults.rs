//! PostgreSQL stopped and started again under load, on a private cluster this test runs on
//! its own port (initdb + pg_ctl from `ROLLGATE_PG_BINDIR`): while the database is down,
//! writes answer 503 problem+json (never 500) and `/readyz` says not ready; once it is
//! back, the same server process (never restarted) answers again, retries with the same
//! Idempotency-Key complete, and nothing acknowledged is lost.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollgate_auth::DevKeys;
use rollgate_store::EventStore;
use rollgate_testkit::tools::{free_port, give_to_postgres, pg_command};
use serde_json::{json, Value};
use support::{create_rollout, http_client, spawn_server_with, token, wait_ready};

/// The server's wait for a database connection (`--db-acquire-timeout-ms`): while the
/// database is down, a refusal should come no later than this plus the request's own work.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1000);

/// A refused write: status, content type, how long it took.
type Refusal = (u16, Option<String>, Duration);

/// A PostgreSQL cluster of this test; stopped (immediately) when dropped.
struct Cluster {
    data: PathBuf,
    log: PathBuf,
    port: u16,
}

impl Cluster {
    fn init(dir: &Path) -> Cluster {
        give_to_postgres(dir);
        let data = dir.join("data");
        let out = pg_command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster {
            log: dir.join("postgres.log"),
            data,
            port: free_port(),
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(args)
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    fn start(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.display()
        );
        self.pg_ctl(&["-w", "-t", "30", "-o", &opts, "start"]);
    }

    fn stop(&self) {
        self.pg_ctl(&["-w", "-t", "30", "-m", "fast", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

async fn note(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    id: &str,
    key: &str,
) -> Result<(u16, Option<String>, Value, Duration), reqwest::Error> {
    let started = Instant::now();
    let r = client
        .post(format!("{base}/v1/rollouts/{id}/notes"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&json!({"audience": "internal", "text": format!("fault {key}")}))
        .send()
        .await?;
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = r.json().await.unwrap_or(Value::Null);
    Ok((status, ct, body, started.elapsed()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_and_back_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let pg_dir = dir.path().join("pg");
    let cluster = Cluster::init(&pg_dir);
    cluster.start();
    let key_dir = dir.path().join("keys");
    let log = dir.path().join("server.log");
    let keys = DevKeys::load_or_create(&key_dir).expect("dev keys");
    let writer = token(&keys, "alice", &["release_manager"], &["web"]);
    let client = http_client(Duration::from_secs(20));
    let acquire_ms = ACQUIRE_TIMEOUT.as_millis().to_string();
    let mut server = spawn_server_with(
        &cluster.url(),
        &key_dir,
        &log,
        &["--db-acquire-timeout-ms", &acquire_ms],
    );
    wait_ready(&client, &mut server, &log).await;
    let base = server.base.clone();
    let id = create_rollout(&client, &base, &writer, "fault").await;

    // Load: three writers until told to stop; each logs acknowledged answers and keys whose
    // outcome is unknown.
    let acked: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let unknown: Arc<Mutex<Vec<String>>> = Arc::default();
    let refusals: Arc<Mutex<Vec<Refusal>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..3)
        .map(|w| {
            let (client, base, writer, id) =
                (client.clone(), base.clone(), writer.clone(), id.clone());
            let (acked, unknown, refusals, stop) = (
                acked.clone(),
                unknown.clone(),
                refusals.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                for n in 0..2_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let key = format!("w{w}-{n}");
                    match note(&client, &base, &writer, &id, &key).await {
                        Ok((201, _, body, _)) => {
                            acked.lock().unwrap().insert(key, body);
                        }
                        // Three writers on one rollout: a version conflict asks for a
                        // retry, done after the fault with the same key.
                        Ok((409, _, _, _)) => unknown.lock().unwrap().push(key),
                        Ok((status, ct, _, took)) => {
                            refusals.lock().unwrap().push((status, ct, took));
                            unknown.lock().unwrap().push(key);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(_) => unknown.lock().unwrap().push(key),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.stop();
    let stopped_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // While down: /readyz says so, quickly.
    let started = Instant::now();
    let r = client.get(format!("{base}/readyz")).send().await.unwrap();
    let readyz_took = started.elapsed();
    let readyz_status = r.status().as_u16();
    assert_eq!(readyz_status, 503, "{:?}", r.text().await);
    let down = stopped_at.elapsed();
    cluster.start();
    // Back: the same process answers again, without a restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.get(format!("{base}/readyz")).send().await.unwrap();
        if r.status().is_success() {
            break;
        }
        assert!(Instant::now() < deadline, "not ready again within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = stopped_at.elapsed() - down;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("writer");
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );

    let refusals = Arc::try_unwrap(refusals).unwrap().into_inner().unwrap();
    assert!(!refusals.is_empty(), "no write was refused while down");
    for (status, ct, _) in &refusals {
        assert_eq!(
            *status,
            503,
            "while down; server log:\n{}",
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("ERROR") || l.contains("\"error\""))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(ct.as_deref(), Some("application/problem+json"));
    }
    let slowest = refusals.iter().map(|r| r.2).max().unwrap();
    // Retry every unknown outcome with its key.
    let mut acked = Arc::try_unwrap(acked).unwrap().into_inner().unwrap();
    let unknown = Arc::try_unwrap(unknown).unwrap().into_inner().unwrap();
    for key in &unknown {
        let (status, _, body, _) = note(&client, &base, &writer, &id, key).await.unwrap();
        assert_eq!(status, 201, "retry of {key}: {body}");
        acked.insert(key.clone(), body);
    }

    // Nothing acknowledged lost, nothing twice.
    let db_store: Arc<dyn EventStore> = rollgate_store::connect(&cluster.url(), Default::default())
        .await
        .expect("store");
    let mut texts: HashMap<u64, Option<String>> = HashMap::new();
    let mut notes: HashMap<String, usize> = HashMap::new();
    let mut after = 0;
    loop {
        let batch = db_store.read_all(after, 500).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for e in batch {
            assert_eq!(e.position, after + 1, "gap");
            after = e.position;
            let text = e.payload["text"].as_str().map(str::to_owned);
            if let Some(t) = &text {
                *notes.entry(t.clone()).or_default() += 1;
            }
            texts.insert(e.position, text);
        }
    }
    let mut lost = 0;
    let mut checked = 0;
    for (key, body) in &acked {
        let expected = format!("fault {key}");
        let position = body["position"].as_u64().expect("position");
        checked += 1;
        if texts.get(&position).cloned().flatten().as_deref() != Some(expected.as_str()) {
            lost += 1;
        }
        assert_eq!(notes.get(&expected), Some(&1), "{key} not there once");
    }
    assert_eq!(lost, 0);
    assert!(rollgate_store::verify(&*db_store, None)
        .await
        .unwrap()
        .is_ok());
    server.child.kill();
    eprintln!(
        "database_faults: postgres down {down:?}, ready again {recovered:?} after start, refusals while down {} (all 503 problem+json, slowest {slowest:?}), /readyz 503 in {readyz_took:?}, retried {}, acknowledged events checked {checked}, lost {lost}",
        refusals.len(),
        unknown.len()
    );
    // Fast: no refusal waits much longer than one connection wait. (A write may meet the
    // timeout twice: the idempotency claim and the append.)
    let bound = ACQUIRE_TIMEOUT * 2 + Duration::from_secs(2);
    assert!(slowest <= bound, "slowest refusal {slowest:?} > {bound:?}");
    assert!(readyz_took <= bound, "/readyz took {readyz_took:?}");
}
