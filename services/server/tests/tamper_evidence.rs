//! Tamper evidence end to end, against the real `rollgate serve` binary on PostgreSQL: an
//! attacker with superuser rights on the database (triggers disabled) rewrites a stored
//! event, and `GET /v1/audit/verify` names its position; the attacker cuts the log's tail
//! and rewinds the head row, and `rollgate verify --head` with a head exported earlier names
//! the first missing position.
//!
//! The store-level checks of the same attacks are in services/store/tests/conformance.rs
//! (`verify_names_the_tampered_position`, truncation against an exported head) and the
//! export files' in tests/tests/audit_export.rs.

mod support;

use std::process::Command;
use std::time::Duration;

use rollgate_auth::DevKeys;
use rollgate_testkit::TestDb;
use serde_json::{json, Value};
use sqlx::Executor;
use support::{create_rollout, http_client, spawn_server, token, wait_ready, BIN};

async fn as_superuser(url: &str, statements: &[&str]) {
    let pool = sqlx::PgPool::connect(url)
        .await
        .expect("superuser connection");
    pool.execute("ALTER TABLE events DISABLE TRIGGER USER")
        .await
        .unwrap();
    pool.execute("ALTER TABLE event_head DISABLE TRIGGER USER")
        .await
        .unwrap();
    for s in statements {
        pool.execute(*s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    pool.execute("ALTER TABLE events ENABLE TRIGGER USER")
        .await
        .unwrap();
    pool.execute("ALTER TABLE event_head ENABLE TRIGGER USER")
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_event_and_cut_tail_are_found() {
    let db = TestDb::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("keys");
    let log = dir.path().join("server.log");
    let keys = DevKeys::load_or_create(&key_dir).expect("dev keys");
    let writer = token(&keys, "alice", &["release_manager"], &["web"]);
    let auditor = token(&keys, "ada", &["auditor"], &["*"]);
    let client = http_client(Duration::from_secs(20));
    let mut server = spawn_server(&db.url, &key_dir, &log);
    wait_ready(&client, &mut server, &log).await;
    let base = server.base.clone();

    let id = create_rollout(&client, &base, &writer, "tamper").await;
    for i in 0..8 {
        let r = client
            .post(format!("{base}/v1/rollouts/{id}/notes"))
            .bearer_auth(&writer)
            .json(&json!({"audience": "internal", "text": format!("note {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let get = |path: String| {
        let client = client.clone();
        let auditor = auditor.clone();
        async move {
            let r = client.get(path).bearer_auth(auditor).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let head = get(format!("{base}/v1/audit/head")).await;
    let end = head["position"].as_u64().unwrap();
    assert!(end >= 9, "{head}");
    let report = get(format!("{base}/v1/audit/verify")).await;
    assert_eq!(report["ok"], true, "{report}");
    let head_file = dir.path().join("head.json");
    std::fs::write(&head_file, head.to_string()).unwrap();

    // Cut the tail (two events) and rewind the head row: the rest still chains, but not
    // against the exported head.
    let cut = end - 2;
    as_superuser(
        &db.url,
        &[
            &format!("DELETE FROM events WHERE position > {cut}"),
            &format!(
                "UPDATE event_head SET position = {cut}, \
                 hash = (SELECT hash FROM events WHERE position = {cut})"
            ),
        ],
    )
    .await;
    server.child.kill();
    let out = Command::new(BIN)
        .args(["verify", "--database-url", &db.url, "--head"])
        .arg(&head_file)
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success(), "truncation went unnoticed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .unwrap_or(Value::Null);
    assert_eq!(line["ok"], false, "{text}");
    assert_eq!(line["first_bad_position"], cut + 1, "{text}");

    // Rewrite one stored event: the running server's verify names its position.
    let mut server = spawn_server(&db.url, &key_dir, &log);
    wait_ready(&client, &mut server, &log).await;
    let base = server.base.clone();
    as_superuser(
        &db.url,
        &["UPDATE events SET payload = jsonb_set(payload, '{text}', '\"forged\"') WHERE position = 3"],
    )
    .await;
    let report = get(format!("{base}/v1/audit/verify")).await;
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["first_bad_position"], 3, "{report}");
    eprintln!(
        "tamper_evidence: rewritten event found at 3 by /v1/audit/verify; truncation to {cut} found at {} by rollgate verify --head",
        cut + 1
    );
}
