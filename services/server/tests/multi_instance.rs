//! Three `rollgate serve` processes on one PostgreSQL database under concurrent load on the
//! same rollouts: one gap-free log, every acknowledged event in it once, the same key sent
//! to all three instances at once writes once, no event applied twice by any projection,
//! read models equal to a rebuild, and every instance's reads converge (`min_position`).

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use rollgate_auth::DevKeys;
use rollgate_store::EventStore;
use rollgate_testkit::TestDb;
use serde_json::{json, Value};
use support::{
    assert_rebuild_equals, create_body, http_client, spawn_server, token, wait_projected,
    wait_ready, Server,
};

const INSTANCES: usize = 3;
const WRITERS: usize = 6;
const NOTES_PER_WRITER: usize = 30;
const SHARED_KEYS: usize = 10;

async fn post(
    client: &reqwest::Client,
    url: String,
    token: &str,
    key: &str,
    body: &Value,
) -> (u16, Value) {
    let r = client
        .post(url)
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("answer");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn note_body(key: &str) -> Value {
    json!({"audience": "internal", "text": format!("multi {key}")})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_log() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("keys");
    let keys = DevKeys::load_or_create(&key_dir).expect("dev keys");
    let writer = token(&keys, "alice", &["release_manager"], &["web"]);
    let auditor = token(&keys, "ada", &["auditor"], &["*"]);
    let client = http_client(Duration::from_secs(20));
    let mut servers: Vec<Server> = Vec::new();
    for i in 0..INSTANCES {
        let log = dir.path().join(format!("server-{i}.log"));
        let mut s = spawn_server(&db.url, &key_dir, &log);
        wait_ready(&client, &mut s, &log).await;
        servers.push(s);
    }
    let bases: Arc<Vec<String>> = Arc::new(servers.iter().map(|s| s.base.clone()).collect());

    let mut rollouts = Vec::new();
    for i in 0..3 {
        let body = create_body(&format!("multi-{i}"));
        let (status, body) = post(
            &client,
            format!("{}/v1/rollouts", bases[i % INSTANCES]),
            &writer,
            &format!("create-{i}"),
            &body,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        rollouts.push(body["rollout_id"].as_str().unwrap().to_owned());
    }
    let rollouts = Arc::new(rollouts);

    // Writers spread over instances and rollouts; each also sends a few keys to all three
    // instances at once.
    let acked: Arc<Mutex<HashMap<String, Vec<Value>>>> = Arc::default();
    let retries: Arc<Mutex<u64>> = Arc::default();
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, writer, bases, rollouts, acked, retries) = (
                client.clone(),
                writer.clone(),
                bases.clone(),
                rollouts.clone(),
                acked.clone(),
                retries.clone(),
            );
            tokio::spawn(async move {
                for n in 0..NOTES_PER_WRITER {
                    let key = format!("w{w}-{n}");
                    let id = &rollouts[(w + n) % rollouts.len()];
                    let body = note_body(&key);
                    let targets: Vec<&String> = if n < SHARED_KEYS / 2 {
                        bases.iter().collect()
                    } else {
                        vec![&bases[(w + n) % bases.len()]]
                    };
                    // A version conflict (another instance wrote the rollout meanwhile)
                    // asks for a retry: the same request with the same key, a bounded
                    // number of times.
                    let answers = join_all(targets.iter().map(|b| {
                        let (client, writer, key, body) = (&client, &writer, &key, &body);
                        let url = format!("{b}/v1/rollouts/{id}/notes");
                        async move {
                            let mut conflicts = 0;
                            loop {
                                let (status, answer) =
                                    post(client, url.clone(), writer, key, body).await;
                                if status == 409
                                    && answer["type"] == "urn:rollgate:problem:version-conflict"
                                    && conflicts < 50
                                {
                                    conflicts += 1;
                                    tokio::time::sleep(Duration::from_millis(5 * conflicts)).await;
                                    continue;
                                }
                                return (status, answer, conflicts);
                            }
                        }
                    }))
                    .await;
                    for (status, body, conflicts) in answers {
                        assert_eq!(status, 201, "{key} after {conflicts} conflicts: {body}");
                        *retries.lock().unwrap() += conflicts;
                        acked
                            .lock()
                            .unwrap()
                            .entry(key.clone())
                            .or_default()
                            .push(body);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let acked = Arc::try_unwrap(acked).unwrap().into_inner().unwrap();
    // The same key on three instances at once: one answer, given three times.
    for (key, answers) in &acked {
        assert!(
            answers
                .windows(2)
                .all(|p| p[0]["position"] == p[1]["position"]),
            "{key}: different answers {answers:?}"
        );
    }

    // One gap-free log; each acknowledged event once; each key's note once.
    let store: Arc<dyn EventStore> = db.store(Default::default()).await;
    let head = store.head().await.unwrap().position;
    let mut ids: HashSet<String> = HashSet::new();
    let mut at: HashMap<u64, (String, Option<String>)> = HashMap::new();
    let mut notes: HashMap<String, usize> = HashMap::new();
    let mut after = 0;
    loop {
        let batch = store.read_all(after, 500).await.unwrap();
        if batch.is_empty() {
            break;
        }
        for e in batch {
            assert_eq!(e.position, after + 1, "gap in the log");
            after = e.position;
            assert!(ids.insert(e.id.to_string()), "event id twice");
            let text = e.payload["text"].as_str().map(str::to_owned);
            if let Some(t) = &text {
                *notes.entry(t.clone()).or_default() += 1;
            }
            at.insert(e.position, (e.event_type.clone(), text));
        }
    }
    assert_eq!(after, head);
    let mut checked = 0;
    for (key, answers) in &acked {
        let first = answers[0]["first_position"].as_u64().unwrap();
        for (i, kind) in answers[0]["events"].as_array().unwrap().iter().enumerate() {
            let (t, text) = &at[&(first + i as u64)];
            assert_eq!(Some(t.as_str()), kind.as_str(), "{key}");
            assert_eq!(
                text.as_deref(),
                Some(format!("multi {key}").as_str()),
                "{key}"
            );
            checked += 1;
        }
        assert_eq!(notes.get(&format!("multi {key}")), Some(&1), "{key}");
    }
    assert_eq!(acked.len(), WRITERS * NOTES_PER_WRITER);

    // Every instance's reads converge: the whole audit trail at min_position = head.
    let mut trails = Vec::new();
    for base in bases.iter() {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut url = format!("{base}/v1/audit?limit=1000&min_position={head}");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let r = client.get(url).bearer_auth(&auditor).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            let page: Value = r.json().await.unwrap();
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            cursor = page["next_cursor"].as_str().map(str::to_owned);
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(items.len() as u64, head, "{base}: audit trail length");
        trails.push(items);
    }
    assert!(
        trails.windows(2).all(|t| t[0] == t[1]),
        "instances disagree"
    );

    // No event applied twice; read models equal a rebuild.
    let pool = store.pool();
    wait_projected(&pool, head).await;
    for s in &mut servers {
        s.child.kill();
    }
    let incremental = rollgate_projections::dump_read_models(&pool, None)
        .await
        .unwrap();
    let audit_rows = incremental
        .iter()
        .find(|(t, _)| t == "audit_trail")
        .map(|(_, rows)| rows.len() as u64);
    assert_eq!(audit_rows, Some(head), "one audit row per event");
    assert_rebuild_equals(store.clone(), &incremental, head).await;
    eprintln!(
        "multi_instance: instances {INSTANCES}, writers {WRITERS}, acknowledged requests {}, version-conflict retries {}, events checked {checked}, log head {head}, lost 0, applied twice 0",
        acked.len(),
        retries.lock().unwrap()
    );
}
