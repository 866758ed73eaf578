//! Webhook delivery survives SIGKILL of the real `rollgate serve` binary (issue 13: "the
//! server killed with SIGKILL mid-delivery and restarted loses nothing (duplicates only with
//! the same `webhook-id`)").
//!
//! Two webhook targets of team `web` point at one Python receiver (services/delivery/tests/
//! support/receiver.py, verifying every signature with the independent `standardwebhooks`
//! package) that takes RECEIVER_SLEEP seconds to answer each delivery, so a request is in
//! flight nearly all the time. A writer adds notes the whole time. KILLS times, as soon as a
//! new delivery has arrived (a request in flight, unanswered), the server is killed with
//! SIGKILL and started again on the same database; its delivery leases expire after
//! LEASE_SECONDS and the new process takes the targets over. Then (bounded) the receiver
//! must hold, per target: every deliverable event the log holds after the registration, at
//! least once; nothing the log does not hold; every request verified with that target's
//! secret; `webhook-id` = the event's id on every copy; first deliveries in log order; and
//! every duplicate a redelivery of the unacknowledged tail (the one event in flight when
//! the process died), at most one per kill.

mod support;

#[path = "../../delivery/tests/support/receiver.rs"]
mod receiver;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use receiver::Receiver;
use rollgate_auth::DevKeys;
use rollgate_store::{BackendKind, EventStore};
use rollgate_testkit::TestDb;
use serde_json::{json, Value};
use support::{create_rollout, http_client, spawn_server_with, token, wait_ready, Rng, Server};

const KILLS: usize = 5;
const TARGETS: usize = 2;
/// How long the receiver takes to answer each delivery (seconds).
const RECEIVER_SLEEP: f64 = 0.15;
const LEASE_SECONDS: u64 = 2;
/// Deliveries (across targets) that must arrive in a process's life before it is killed.
const DELIVERIES_PER_LIFE: usize = 3;
/// One note per this many milliseconds while the kills go on.
const NOTE_EVERY_MS: u64 = 200;
const MAX_NOTES: usize = 200;
const TYPES: [&str; 2] = [
    "dev.rollgate.rollout.created",
    "dev.rollgate.rollout.note_added",
];
const STORED_TYPES: [&str; 2] = ["RolloutCreated", "NoteAdded"];

fn spawn(url: &str, key_dir: &Path, secrets_key: &Path, log_file: &Path) -> Server {
    let lease = LEASE_SECONDS.to_string();
    spawn_server_with(
        url,
        key_dir,
        log_file,
        &[
            "--secrets-key-file",
            secrets_key.to_str().expect("a UTF-8 path"),
            "--webhooks-allow-loopback",
            "--webhook-timeout-seconds",
            "5",
            "--delivery-lease-seconds",
            &lease,
        ],
    )
}

/// Adds a note every NOTE_EVERY_MS to one of `rollouts` through whichever server is up
/// (`base`); refusals and connection errors (the server being down) are only counted.
async fn writer(
    client: reqwest::Client,
    base: Arc<Mutex<String>>,
    token: String,
    rollouts: Vec<String>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
) {
    let mut n = 0usize;
    while !stop.load(Ordering::SeqCst) && n < MAX_NOTES {
        n += 1;
        let base = base.lock().unwrap().clone();
        let id = &rollouts[n % rollouts.len()];
        let r = client
            .post(format!("{base}/v1/rollouts/{id}/notes"))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("note-{n}"))
            .json(&json!({"audience": "internal", "text": format!("delivery crash note {n}")}))
            .send()
            .await;
        match r {
            Ok(r) if r.status().as_u16() == 201 => acked.fetch_add(1, Ordering::SeqCst),
            _ => failed.fetch_add(1, Ordering::SeqCst),
        };
        tokio::time::sleep(Duration::from_millis(NOTE_EVERY_MS)).await;
    }
}

/// The deliverable events the targets must receive, in log order: (event id, position).
async fn expected(store: &dyn EventStore, after: u64) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut from = after;
    loop {
        let page = store.read_all(from, 500).await.unwrap();
        if page.is_empty() {
            return out;
        }
        for e in &page {
            from = e.position;
            if STORED_TYPES.contains(&e.event_type.as_str())
                && e.metadata.get("team").and_then(Value::as_str) == Some("web")
            {
                out.push((e.id.to_string(), e.position));
            }
        }
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// What one target received, checked against the log.
#[derive(Debug, Default)]
struct TargetFigures {
    deliveries: usize,
    duplicates: usize,
    rewinds: usize,
}

fn check_target(
    target: usize,
    log: &[Value],
    expected: &[(String, u64)],
    kill_times: &[f64],
) -> TargetFigures {
    let path = format!("/hook/{target}");
    let position: HashMap<&str, u64> = expected.iter().map(|(id, p)| (id.as_str(), *p)).collect();
    let mut first: HashMap<String, (String, u64)> = HashMap::new();
    let mut figures = TargetFigures::default();
    let mut last_first_delivered: Option<u64> = None;
    let mut previous: Option<u64> = None;
    let mut first_positions = Vec::new();
    for d in log.iter().filter(|d| d["path"] == path.as_str()) {
        figures.deliveries += 1;
        assert_eq!(
            d["verified_with"],
            json!([target]),
            "target {target}: not verified with its own secret: {d}"
        );
        let event_id = d["body"]["id"].as_str().expect("CloudEvents id").to_owned();
        let webhook_id = d["webhook_id"].as_str().expect("webhook-id").to_owned();
        assert_eq!(webhook_id, event_id, "webhook-id is the event's id: {d}");
        let Some(&at) = position.get(event_id.as_str()) else {
            panic!("target {target}: delivered an event the log does not hold for it: {d}");
        };
        if previous.is_some_and(|p| at <= p) {
            figures.rewinds += 1;
        }
        previous = Some(at);
        match first.get(&event_id) {
            None => {
                assert!(
                    last_first_delivered.is_none_or(|p| p < at),
                    "target {target}: event at {at} first delivered after {last_first_delivered:?} (log order)"
                );
                last_first_delivered = Some(at);
                first_positions.push(at);
                first.insert(event_id, (webhook_id, at));
            }
            Some((first_webhook_id, _)) => {
                figures.duplicates += 1;
                assert_eq!(
                    &webhook_id, first_webhook_id,
                    "a duplicate carries the first delivery's webhook-id"
                );
                // Only the unacknowledged tail is sent again: the one event that was in
                // flight (the latest first delivered) when a process died.
                assert_eq!(
                    Some(at),
                    last_first_delivered,
                    "target {target}: redelivered {event_id} at {at}, not the unacknowledged tail {last_first_delivered:?}"
                );
                let received = d["received_at"].as_f64().unwrap_or(0.0);
                assert!(
                    kill_times.iter().any(|k| *k <= received),
                    "target {target}: a duplicate before any kill: {d}"
                );
            }
        }
    }
    let missing: Vec<_> = expected
        .iter()
        .filter(|(id, _)| !first.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "target {target}: events lost: {missing:?}"
    );
    assert!(
        figures.duplicates <= kill_times.len() && figures.rewinds <= kill_times.len(),
        "target {target}: more redeliveries than kills: {figures:?}"
    );
    figures
}

async fn kill_mid_delivery(kind: BackendKind) {
    let started = Instant::now();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let db = TestDb::new(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("keys");
    let secrets_key = dir.path().join("secrets.key");
    std::fs::write(
        &secrets_key,
        uuid::Uuid::new_v4().simple().to_string().repeat(2),
    )
    .unwrap();
    let log_file = dir.path().join("server.log");
    let keys = DevKeys::load_or_create(&key_dir).expect("dev keys");
    let admin = token(&keys, "gina", &["governance_admin"], &["web"]);
    let writer_token = token(&keys, "alice", &["release_manager"], &["web"]);
    let client = http_client(Duration::from_secs(10));
    let receiver = Receiver::start_with(
        0,
        json!({"default": {"status": 200, "sleep": RECEIVER_SLEEP}}),
    );

    let mut server = spawn(&db.url, &key_dir, &secrets_key, &log_file);
    wait_ready(&client, &mut server, &log_file).await;

    // Two targets, each with its own secret, on one receiver (told the secrets before any
    // deliverable event exists).
    let mut secrets = Vec::new();
    let mut registered_at = 0u64;
    for t in 0..TARGETS {
        let r = client
            .post(format!("{}/v1/webhooks", server.base))
            .bearer_auth(&admin)
            .header("Idempotency-Key", format!("register-{t}"))
            .json(&json!({"team": "web", "url": format!("{}/{t}", receiver.url()), "event_types": TYPES}))
            .send()
            .await
            .expect("register");
        assert_eq!(r.status().as_u16(), 201);
        let body: Value = r.json().await.unwrap();
        secrets.push(body["secret"].as_str().expect("secret").to_owned());
        registered_at = registered_at.max(body["position"].as_u64().expect("position"));
    }
    receiver.control(json!({ "secrets": secrets })).await;

    let mut rollouts = Vec::new();
    for i in 0..2 {
        rollouts.push(
            create_rollout(&client, &server.base, &writer_token, &format!("crash-{i}")).await,
        );
    }
    let base = Arc::new(Mutex::new(server.base.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let writing = tokio::spawn(writer(
        client.clone(),
        base.clone(),
        writer_token.clone(),
        rollouts.clone(),
        stop.clone(),
        acked.clone(),
        failed.clone(),
    ));

    // Kill as soon as a new delivery has arrived in this life: it is unanswered for
    // RECEIVER_SLEEP, so the kill lands mid-delivery.
    let mut kill_times = Vec::new();
    let mut since_arrival = Vec::new();
    for round in 0..KILLS {
        let life_start = receiver.count().await;
        let threshold = life_start + DELIVERIES_PER_LIFE + rng.between(0, 2) as usize;
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = life_start;
        loop {
            assert!(
                Instant::now() < deadline,
                "round {round}: no delivery in 20 s; server log: {}",
                std::fs::read_to_string(&log_file).unwrap_or_default()
            );
            let n = receiver.count().await;
            if n > seen && n >= threshold {
                break;
            }
            seen = n;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.child.kill(); // SIGKILL
        let killed_at = now_secs();
        kill_times.push(killed_at);
        let last = receiver.log().await;
        let newest = last
            .iter()
            .filter_map(|d| d["received_at"].as_f64())
            .fold(0.0, f64::max);
        since_arrival.push(killed_at - newest);
        server = spawn(&db.url, &key_dir, &secrets_key, &log_file);
        wait_ready(&client, &mut server, &log_file).await;
        *base.lock().unwrap() = server.base.clone();
    }
    // One more stretch of writing in the last life, then every event must arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    writing.await.unwrap();

    let store: Arc<dyn EventStore> = db.store(Default::default()).await;
    let want = expected(store.as_ref(), registered_at).await;
    let ids: HashSet<&str> = want.iter().map(|(id, _)| id.as_str()).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let log = loop {
        let log = receiver.log().await;
        let complete = (0..TARGETS).all(|t| {
            let path = format!("/hook/{t}");
            let got: HashSet<&str> = log
                .iter()
                .filter(|d| d["path"] == path.as_str())
                .filter_map(|d| d["body"]["id"].as_str())
                .collect();
            ids.iter().all(|id| got.contains(id))
        });
        if complete {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "not every event delivered within 90 s after the last restart ({} deliveries so far)",
            log.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Let anything still in flight land before counting duplicates.
    tokio::time::sleep(Duration::from_secs_f64(RECEIVER_SLEEP * 3.0)).await;
    let log = {
        let later = receiver.log().await;
        if later.len() > log.len() {
            later
        } else {
            log
        }
    };

    let mut deliveries = 0;
    let mut duplicates = 0;
    let mut rewinds = 0;
    for t in 0..TARGETS {
        let f = check_target(t, &log, &want, &kill_times);
        eprintln!("target {t}: {f:?}");
        deliveries += f.deliveries;
        duplicates += f.duplicates;
        rewinds += f.rewinds;
    }
    let mid_delivery = since_arrival
        .iter()
        .filter(|s| **s < RECEIVER_SLEEP)
        .count();
    eprintln!(
        "delivery_crash {kind:?}: seed {seed}, kills {} ({mid_delivery} within {RECEIVER_SLEEP} s of an arrival: {since_arrival:.3?}), \
         targets {TARGETS}, events to deliver per target {}, deliveries {deliveries}, duplicates {duplicates} \
         (rewinds {rewinds}), lost 0, notes acknowledged {} (refused or unanswered {}), {:.1} s",
        kill_times.len(),
        want.len(),
        acked.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(kill_times.len(), KILLS);
    assert_eq!(deliveries, TARGETS * want.len() + duplicates);
    server.child.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_webhooks_survive_sigkill_mid_delivery() {
    kill_mid_delivery(BackendKind::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_webhooks_survive_sigkill_mid_delivery() {
    kill_mid_delivery(BackendKind::Sqlite).await;
}
