//! Crash safety of the real `rollgate serve` binary, on PostgreSQL and on SQLite.
//!
//! Concurrent writers add notes to a few rollouts, each with its own Idempotency-Key, and log
//! every acknowledged answer (positions and event ids). The server is killed with SIGKILL at
//! a random moment, restarted on the same database, and every request that was in flight (or
//! refused for want of a server) is retried with the same key: it must complete within
//! seconds. After the last round: every acknowledged event is in the log exactly once at its
//! acknowledged position, the log is gap-free, no key wrote twice, the chain verifies
//! (`/v1/audit/verify` and `rollgate verify`), and the read models equal a rebuild.
//!
//! Bounded: ROUNDS kills per backend, each after at most MAX_RUN_MS of load.

mod support;

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rollgate_auth::DevKeys;
use rollgate_store::{BackendKind, EventStore};
use rollgate_testkit::TestDb;
use serde_json::{json, Value};
use support::{
    assert_rebuild_equals, create_body, http_client, spawn_server, token, wait_projected,
    wait_ready, Rng, BIN,
};
const ROUNDS: usize = 10;
const WRITERS: usize = 4;
const ROLLOUTS: usize = 3;
const MIN_RUN_MS: u64 = 150;
const MAX_RUN_MS: u64 = 900;
/// How long a retry after a restart may take, in total, before the test fails.
const RETRY_DEADLINE: Duration = Duration::from_secs(5);
const NOTE_PREFIX: &str = "crash-note ";

#[derive(Clone, Debug)]
struct Pending {
    key: String,
    path: String,
    body: Value,
}

#[derive(Clone, Debug, PartialEq)]
struct Ack {
    position: u64,
    first_position: u64,
    events: Vec<String>,
}

#[derive(Default)]
struct Log {
    acked: HashMap<String, (Pending, Ack)>,
    pending: Vec<Pending>,
    unexpected: Vec<String>,
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    p: &Pending,
) -> Result<(u16, Value), reqwest::Error> {
    let r = client
        .post(format!("{base}{}", p.path))
        .bearer_auth(token)
        .header("Idempotency-Key", &p.key)
        .json(&p.body)
        .send()
        .await?;
    let status = r.status().as_u16();
    let bytes = r.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

fn ack_of(body: &Value) -> Option<Ack> {
    Some(Ack {
        position: body["position"].as_u64()?,
        first_position: body["first_position"].as_u64()?,
        events: body["events"]
            .as_array()?
            .iter()
            .map(|e| e.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?,
    })
}

#[allow(clippy::too_many_arguments)]
async fn writer(
    client: reqwest::Client,
    base: String,
    token: String,
    rollouts: Arc<Vec<String>>,
    round: usize,
    w: usize,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
) {
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) && n < 10_000 {
        n += 1;
        let key = format!("r{round}-w{w}-{n}");
        let id = &rollouts[(w + n) % rollouts.len()];
        let p = Pending {
            path: format!("/v1/rollouts/{id}/notes"),
            body: json!({"audience": "internal", "text": format!("{NOTE_PREFIX}{key}")}),
            key,
        };
        match send(&client, &base, &token, &p).await {
            Ok((201, body)) => match ack_of(&body) {
                Some(ack) => {
                    log.lock().unwrap().acked.insert(p.key.clone(), (p, ack));
                }
                None => log
                    .lock()
                    .unwrap()
                    .unexpected
                    .push(format!("{}: 201 without positions: {body}", p.key)),
            },
            // The server may be going down: the outcome is unknown, retry later.
            Ok((status, _)) if status >= 500 => {
                log.lock().unwrap().pending.push(p);
                return;
            }
            Ok((status, body)) => {
                log.lock()
                    .unwrap()
                    .unexpected
                    .push(format!("{}: {status} {body}", p.key));
                return;
            }
            Err(_) => {
                log.lock().unwrap().pending.push(p);
                return;
            }
        }
    }
}

fn collect_notes(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if s.starts_with(NOTE_PREFIX) => out.push(s[NOTE_PREFIX.len()..].into()),
        Value::Array(a) => a.iter().for_each(|x| collect_notes(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_notes(x, out)),
        _ => {}
    }
}

async fn crash_and_restart(kind: BackendKind) {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let db = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("keys");
    let log_file = dir.path().join("server.log");
    let keys = DevKeys::load_or_create(&key_dir).expect("dev keys");
    let writer_token = token(&keys, "alice", &["release_manager"], &["web"]);
    let auditor = token(&keys, "ada", &["auditor"], &["*"]);
    let client = http_client(Duration::from_secs(10));

    let mut server = spawn_server(&db.url, &key_dir, &log_file);
    wait_ready(&client, &mut server, &log_file).await;
    let mut rollouts = Vec::new();
    for i in 0..ROLLOUTS {
        let body = create_body(&format!("crash-{i}"));
        let p = Pending {
            key: format!("create-{i}"),
            path: "/v1/rollouts".into(),
            body,
        };
        let (status, body) = send(&client, &server.base, &writer_token, &p)
            .await
            .expect("create");
        assert_eq!(status, 201, "{body}");
        rollouts.push(body["rollout_id"].as_str().unwrap().to_owned());
    }
    let rollouts = Arc::new(rollouts);
    let log = Arc::new(Mutex::new(Log::default()));
    let mut kills = 0usize;
    let mut retried = 0usize;
    let mut replayed = 0usize;
    let mut slowest_retry = Duration::ZERO;

    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(writer(
                    client.clone(),
                    server.base.clone(),
                    writer_token.clone(),
                    rollouts.clone(),
                    round,
                    w,
                    stop.clone(),
                    log.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.between(MIN_RUN_MS, MAX_RUN_MS))).await;
        // SIGKILL (std's Child::kill), with requests in flight.
        server.child.kill();
        kills += 1;
        stop.store(true, Ordering::SeqCst);
        for t in tasks {
            t.await.expect("writer task");
        }
        server = spawn_server(&db.url, &key_dir, &log_file);
        wait_ready(&client, &mut server, &log_file).await;

        // Retry everything whose outcome is unknown, with the same key.
        let pending = std::mem::take(&mut log.lock().unwrap().pending);
        for p in pending {
            let started = Instant::now();
            loop {
                let r = send(&client, &server.base, &writer_token, &p).await;
                match r {
                    Ok((201, body)) => {
                        let ack = ack_of(&body).expect("positions in the retry's answer");
                        log.lock()
                            .unwrap()
                            .acked
                            .insert(p.key.clone(), (p.clone(), ack));
                        break;
                    }
                    other => {
                        assert!(
                            started.elapsed() < RETRY_DEADLINE,
                            "retry of {} after a restart still refused after {:?}: {other:?}",
                            p.key,
                            started.elapsed()
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            slowest_retry = slowest_retry.max(started.elapsed());
            retried += 1;
        }
        // Some acknowledged requests again: the same answer, nothing new.
        let sample: Vec<(Pending, Ack)> = {
            let l = log.lock().unwrap();
            let mut keys: Vec<_> = l.acked.keys().cloned().collect();
            keys.sort();
            (0..3)
                .filter(|_| !keys.is_empty())
                .map(|_| l.acked[&keys[rng.next() as usize % keys.len()]].clone())
                .collect()
        };
        for (p, ack) in sample {
            let (status, body) = send(&client, &server.base, &writer_token, &p)
                .await
                .expect("replay");
            assert_eq!(status, 201, "replay of {}: {body}", p.key);
            assert_eq!(ack_of(&body).as_ref(), Some(&ack), "replay of {}", p.key);
            replayed += 1;
        }
    }

    let log = Arc::try_unwrap(log).ok().unwrap().into_inner().unwrap();
    assert!(
        log.unexpected.is_empty(),
        "unexpected answers: {:?}",
        log.unexpected
    );

    // The chain verifies through the running server.
    let r = client
        .get(format!("{}/v1/audit/verify", server.base))
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["ok"], true, "{report}");

    // Every acknowledged event exactly once, at its position; positions gap-free.
    let store: Arc<dyn EventStore> = db.store(Default::default()).await;
    let head = store.head().await.unwrap().position;
    assert_eq!(report["verified_through"], head, "{report}");
    // position -> (event type, the note key it carries)
    let mut at: HashMap<u64, (String, Option<String>)> = HashMap::new();
    let mut ids: HashSet<String> = HashSet::new();
    let mut notes: HashMap<String, usize> = HashMap::new();
    let mut after = 0u64;
    loop {
        let batch = store.read_all(after, 500).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for e in &batch {
            assert_eq!(e.position, after + 1, "gap in the log");
            after = e.position;
            assert!(
                ids.insert(e.id.to_string()),
                "event id {} stored twice",
                e.id
            );
            let mut found = Vec::new();
            collect_notes(&e.payload, &mut found);
            for k in &found {
                *notes.entry(k.clone()).or_default() += 1;
            }
            at.insert(e.position, (e.event_type.clone(), found.into_iter().next()));
        }
    }
    assert_eq!(after, head);
    let mut checked = 0usize;
    let mut lost = Vec::new();
    let mut claimed: HashMap<u64, &str> = HashMap::new();
    for (key, (_, ack)) in &log.acked {
        assert_eq!(
            ack.events.len() as u64,
            ack.position - ack.first_position + 1
        );
        for (i, kind) in ack.events.iter().enumerate() {
            checked += 1;
            let position = ack.first_position + i as u64;
            if let Some(other) = claimed.insert(position, key) {
                panic!("{key} and {other} both acknowledged position {position}");
            }
            match at.get(&position) {
                Some((t, note)) if t == kind && note.as_deref() == Some(key.as_str()) => {}
                found => lost.push(format!("{key}: {kind} at {position}, found {found:?}")),
            }
        }
        assert_eq!(
            notes.get(key),
            Some(&1),
            "{key}: its note is not there once"
        );
    }
    assert!(lost.is_empty(), "acknowledged events lost: {lost:?}");
    let lost = lost.len();
    let twice: Vec<_> = notes.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "keys that wrote twice: {twice:?}");

    // Read models: wait until the server has projected the head, stop it, compare with a rebuild.
    let pool = store.pool();
    wait_projected(&pool, head).await;
    server.child.kill();
    let incremental = rollgate_projections::dump_read_models(&pool, None)
        .await
        .unwrap();
    assert_rebuild_equals(store.clone(), &incremental, head).await;

    // And `rollgate verify` on the database the server left behind.
    let out = Command::new(BIN)
        .args(["verify", "--database-url", &db.url])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["ok"], true);
    assert_eq!(cli["verified_through"], head);

    eprintln!(
        "crash_safety {kind:?}: seed {seed}, kills {kills}, restarts {kills}, acknowledged requests {}, acknowledged events checked {checked}, lost {lost}, in-flight retried {retried} (slowest {slowest_retry:?}), replays {replayed}, log head {head}",
        log.acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_survives_sigkill() {
    crash_and_restart(BackendKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_survives_sigkill() {
    crash_and_restart(BackendKind::Sqlite).await;
}
