//! `rollgate audit export|verify|head` and `rollgate rebuild` as a user runs them, on a
//! database with history written through the HTTP API (both backends).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use clap::Parser;
use rollgate_auth::{DevKeys, MintRequest};
use rollgate_server::config::ServeArgs;
use rollgate_server::Application;
use rollgate_store::{BackendKind, Clock, SystemClock};
use rollgate_testkit::TestDb;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_rollgate");

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

/// A command with none of rollgate's configuration inherited from the environment.
fn rollgate(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("ROLLGATE_") || k == "DATABASE_URL" {
            c.env_remove(k);
        }
    }
    c
}

/// Runs the binary off the async workers: (exit code, stdout, stderr).
async fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = rollgate(dir);
    cmd.args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("rollgate runs"))
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A database with a rollout's history: created, signed off, started, readings, an
/// advance request with one approval, a pause, a resume and a rollback.
async fn database_with_history(kind: BackendKind) -> (TestDb, tempfile::TempDir) {
    let db = TestDb::new(kind).await;
    let keys_dir = tempfile::tempdir().unwrap();
    let args = Args::parse_from([
        "rollgate",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &db.url,
        "--dev-key-dir",
        keys_dir.path().to_str().unwrap(),
    ]);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let app = Application::build(&args.serve, clock.clone())
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let keys = DevKeys::load_or_create(keys_dir.path()).unwrap();
    let token = |sub: &str, role: &str| {
        keys.mint(MintRequest {
            sub: sub.into(),
            roles: vec![role.into()],
            teams: vec!["web".into()],
            ttl_seconds: 3600,
            now: clock.now().timestamp(),
            issuer: "rollgate".into(),
            audience: "rollgate".into(),
        })
        .unwrap()
    };
    let client = reqwest::Client::new();
    let post = |path: String, who: String, body: Value| {
        let client = client.clone();
        let url = format!("{base}{path}");
        async move {
            let r = client
                .post(url)
                .bearer_auth(who)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            assert!(status.is_success(), "{path}: {status} {body}");
            body
        }
    };
    let alice = token("alice", "release_manager");
    let sam = token("sam", "sre");
    let create: Value =
        serde_json::from_str(include_str!("../../../tests/fixtures/create-rollout.json")).unwrap();
    let created = post("/v1/rollouts".into(), alice.clone(), create).await;
    let id = created["rollout_id"].as_str().unwrap().to_owned();
    let r = |suffix: &str| format!("/v1/rollouts/{id}{suffix}");
    for (item, who) in [
        ("qa-signoff", &alice),
        ("runbook", &sam),
        ("support-faq", &alice),
    ] {
        post(
            r(&format!("/readiness/{item}/sign-off")),
            who.clone(),
            json!({}),
        )
        .await;
    }
    post(r("/start"), alice.clone(), json!({})).await;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    post(
        r("/metrics"),
        token("metrics-bot", "service"),
        json!({"readings": [
            {"metric": "error_rate", "value": 0.003, "samples": 20000, "observed_at": now},
            {"metric": "p95_latency_ms", "value": 297.5, "samples": 20000, "observed_at": now}
        ]}),
    )
    .await;
    let request = post(r("/advance-requests"), alice.clone(), json!({})).await;
    let rid = request["request_id"].as_str().unwrap().to_owned();
    post(
        r(&format!("/advance-requests/{rid}/approvals")),
        token("bob", "approver"),
        json!({"decision": "approve", "comment": "ok"}),
    )
    .await;
    post(r("/pause"), sam.clone(), json!({"reason": "a dashboard"})).await;
    post(r("/resume"), alice.clone(), json!({})).await;
    post(r("/rollback"), sam.clone(), json!({"reason": "errors up"})).await;
    (db, keys_dir)
}

fn json_line(out: &str) -> Value {
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not one JSON line: {out:?}: {e}"))
}

async fn export_and_verify_offline(kind: BackendKind) {
    let (db, _keys) = database_with_history(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path();
    let url = db.url.as_str();

    let (code, out, err) = run(work, &["audit", "head", "--database-url", url]).await;
    assert_eq!(code, 0, "{err}");
    let head = json_line(&out);
    let n = head["position"].as_u64().unwrap();
    assert!(n >= 10, "{head}");
    std::fs::write(work.join("head.json"), &out).unwrap();

    // To a file: the head of the export is printed.
    let (code, out, err) = run(
        work,
        &[
            "audit",
            "export",
            "--database-url",
            url,
            "--format",
            "ndjson",
            "--output",
            "log.ndjson",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out), head);
    let ndjson = std::fs::read_to_string(work.join("log.ndjson")).unwrap();
    assert_eq!(ndjson.lines().count() as u64, n);
    assert!(!work.join("log.ndjson.partial").exists());

    // To standard output, as CSV.
    let (code, csv, err) = run(
        work,
        &["audit", "export", "--database-url", url, "--format", "csv"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(csv.lines().count() as u64, n + 1);
    std::fs::write(work.join("log.csv"), &csv).unwrap();

    // Offline: no database is opened (none is created in the working directory).
    for (file, format) in [
        ("log.ndjson", None),
        ("log.csv", None),
        ("log.csv", Some("csv")),
    ] {
        let mut args = vec!["audit", "verify", "--export", file, "--head", "head.json"];
        if let Some(f) = format {
            args.extend(["--format", f]);
        }
        let (code, out, err) = run(work, &args).await;
        assert_eq!(code, 0, "{file}: {out} {err}");
        assert_eq!(
            json_line(&out),
            json!({"ok": true, "verified_through": n, "head_hash": head["hash"]})
        );
    }
    assert!(!work.join("rollgate.db").exists());

    // One payload digit changed: the readings' 297.5 becomes 298.5.
    let lines: Vec<&str> = ndjson.lines().collect();
    let index = lines
        .iter()
        .position(|l| l.contains("297.5"))
        .expect("the readings event");
    let tampered: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if i == index {
                l.replacen("297.5", "298.5", 1)
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(work.join("tampered.ndjson"), tampered.join("\n") + "\n").unwrap();
    let (code, out, _) = run(work, &["audit", "verify", "--export", "tampered.ndjson"]).await;
    assert_ne!(code, 0);
    let report = json_line(&out);
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_position"], index as u64 + 1, "{report}");
    let csv_tampered = csv.replacen("297.5", "298.5", 1);
    std::fs::write(work.join("tampered.csv"), csv_tampered).unwrap();
    let (code, out, _) = run(work, &["audit", "verify", "--export", "tampered.csv"]).await;
    assert_ne!(code, 0);
    assert_eq!(json_line(&out)["first_bad_position"], index as u64 + 1);

    // Truncated, checked against the exported head.
    std::fs::write(
        work.join("short.ndjson"),
        lines[..lines.len() - 3].join("\n") + "\n",
    )
    .unwrap();
    let (code, out, _) = run(
        work,
        &[
            "audit",
            "verify",
            "--export",
            "short.ndjson",
            "--head",
            "head.json",
        ],
    )
    .await;
    assert_ne!(code, 0);
    let report = json_line(&out);
    assert_eq!(report["first_bad_position"], n - 2, "{report}");
    assert!(report["reason"].as_str().unwrap().contains("truncated"));

    // The database chain, as `rollgate verify` checks it.
    let (code, out, err) = run(
        work,
        &[
            "audit",
            "verify",
            "--database-url",
            url,
            "--head",
            "head.json",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(json_line(&out)["verified_through"], n);

    // Bad input: one clear line.
    for args in [
        vec!["audit", "verify", "--export", "missing.ndjson"],
        vec![
            "audit",
            "verify",
            "--export",
            "log.ndjson",
            "--head",
            "log.ndjson",
        ],
        vec![
            "audit",
            "export",
            "--database-url",
            url,
            "--from-position",
            "0",
        ],
        vec!["audit", "head", "--database-url", "sqlite://missing.db"],
    ] {
        let (code, _, err) = run(work, &args).await;
        assert_ne!(code, 0, "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("rollgate: "), "{err}");
    }
    let (code, _, err) = run(work, &["audit", "verify", "--format", "csv"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("--export"), "{err}");
}

async fn rebuild_reproduces_the_read_models(kind: BackendKind) {
    let (db, _keys) = database_with_history(kind).await;
    let store = db.store(Default::default()).await;
    let head = store.head().await.unwrap().position;
    let reached = rollgate_projections::Projector::new(store.clone())
        .catch_up()
        .await
        .unwrap();
    assert_eq!(reached, head);
    let pool = store.pool();
    let before = rollgate_projections::dump_read_models(&pool, None)
        .await
        .unwrap();
    let rows_of = |table: &str| {
        before
            .iter()
            .find(|(t, _)| t == table)
            .map_or(0, |(_, rows)| rows.len())
    };
    assert_eq!(rows_of("audit_trail") as u64, head, "{before:?}");
    assert_eq!(rows_of("rollout_summaries"), 1, "{before:?}");
    let dir = tempfile::tempdir().unwrap();

    let (code, out, err) = run(dir.path(), &["rebuild", "--database-url", &db.url]).await;
    assert_eq!(code, 0, "{err}");
    let answer = json_line(&out);
    assert_eq!(answer["position"], head);
    assert_eq!(
        answer["rebuilt"].as_array().unwrap().len(),
        rollgate_projections::READ_MODELS.len()
    );
    let after = rollgate_projections::dump_read_models(&pool, None)
        .await
        .unwrap();
    assert_eq!(before, after, "a rebuild reproduces every row");

    let (code, out, err) = run(
        dir.path(),
        &[
            "rebuild",
            "--database-url",
            &db.url,
            "--projection",
            rollgate_projections::AUDIT_TRAIL,
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json_line(&out),
        json!({"rebuilt": [rollgate_projections::AUDIT_TRAIL], "position": head})
    );
    let again = rollgate_projections::dump_read_models(&pool, None)
        .await
        .unwrap();
    assert_eq!(before, again);

    let (code, _, err) = run(
        dir.path(),
        &["rebuild", "--database-url", &db.url, "--projection", "nope"],
    )
    .await;
    assert_ne!(code, 0);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("unknown projection"), "{err}");
}

rollgate_testkit::both_backends!(
    export_and_verify_offline,
    rebuild_reproduces_the_read_models
);
