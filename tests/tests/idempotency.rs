//! Idempotency-Key under failures: a claim left by a process that died, a reply lost after
//! the commit, an expired record. The command's ids are derived from (caller, key,
//! request), so a rerun is recognised in the log and answered with its first outcome.

use reqwest::Method;
use rollgate_e2e::flow::{self, ALICE};
use rollgate_e2e::{both_backends, example_create_body, json, Backend, Reply, TestApp};
use rollgate_store::sql::Val;
use rollgate_store::Clock;
use serde_json::Value;

fn fingerprint(method: &str, path: &str, body: &Value) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(format!("{method} {path}\n").as_bytes());
    h.update(serde_json::to_vec(body).unwrap());
    hex::encode(h.finalize())
}

async fn send(app: &TestApp, path: &str, body: &Value, key: &str) -> Reply {
    let token = ALICE.token(app);
    app.request(
        Method::POST,
        path,
        Some(&token),
        Some(body),
        &[("Idempotency-Key", key)],
    )
    .await
}

async fn sql(app: &TestApp, statement: &str, args: &[Val]) -> u64 {
    let store = app.db.store(Default::default()).await;
    store.pool().exec(statement, args).await.unwrap()
}

/// A claim left unanswered (its process died) keeps the first request's fingerprint: a
/// retry with another body is refused, the same request runs at once.
async fn stale_claim_keeps_its_request(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = flow::running_example(&app).await;
    let path = format!("/v1/rollouts/{id}/pause");
    let body = json!({ "reason": "checking dashboards" });
    sql(
        &app,
        "INSERT INTO idempotency_records (principal, key, request_hash, status, body, \
         created_at, claim) VALUES ('alice', 'k-1', $1, 0, '', $2, 'dead-process')",
        &[
            Val::text(fingerprint("POST", &path, &body)),
            Val::time(app.clock.now()),
        ],
    )
    .await;
    let before = app.event_count().await;
    let other = json!({ "reason": "something else" });
    let r = send(&app, &path, &other, "k-1").await;
    r.assert_problem(422, None);
    assert_eq!(
        r.body["type"],
        "urn:rollgate:problem:idempotency-key-reused"
    );
    assert_eq!(app.event_count().await, before);
    let first = send(&app, &path, &body, "k-1").await;
    first.assert_status(200);
    assert_eq!(app.event_count().await, before + 1);
    let again = send(&app, &path, &body, "k-1").await;
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert_eq!(app.event_count().await, before + 1);
}

/// The commit succeeded but the answer was never recorded (the process died in between):
/// the retry finds the command's events by their derived ids and answers as the first run
/// did, writing nothing (no second rollout, no second pause).
async fn rerun_after_lost_reply_writes_nothing(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let create = example_create_body();
    let first = send(&app, "/v1/rollouts", &create, "create-1").await;
    first.assert_status(201);
    let id = first.body["rollout_id"].as_str().unwrap().to_owned();
    let pause_path = format!("/v1/rollouts/{id}/notes");
    let note = json!({ "audience": "internal", "text": "hello" });
    let noted = send(&app, &pause_path, &note, "note-1").await;
    noted.assert_status(201);
    let count = app.event_count().await;
    // Lose every recorded answer.
    sql(&app, "DELETE FROM idempotency_records", &[]).await;
    let again = send(&app, "/v1/rollouts", &create, "create-1").await;
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert_eq!(again.header("location"), first.header("location"));
    let again = send(&app, &pause_path, &note, "note-1").await;
    assert_eq!((again.status, &again.body), (noted.status, &noted.body));
    assert_eq!(app.event_count().await, count);
}

/// Records expire after the TTL (refusals included) and are purged; a retry of the same
/// request after that is still answered from the log, another request with the key is new.
async fn records_expire(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = flow::running_example(&app).await;
    let path = format!("/v1/rollouts/{id}/notes");
    let note = json!({ "audience": "internal", "text": "one" });
    let first = send(&app, &path, &note, "n-1").await;
    first.assert_status(201);
    let refused = send(&app, &format!("/v1/rollouts/{id}/start"), &json!({}), "s-1").await;
    refused.assert_problem(409, None);
    let count = app.event_count().await;
    let store = app.db.store(Default::default()).await;
    let now = app.clock.now();
    let purged = rollgate_server::http::idempotency::purge(&store.pool(), now)
        .await
        .unwrap();
    assert_eq!(purged, 0, "nothing expires before the TTL");
    app.advance_clock(
        chrono::Duration::hours(rollgate_server::http::idempotency::TTL_HOURS)
            + chrono::Duration::minutes(1),
    );
    let purged = rollgate_server::http::idempotency::purge(&store.pool(), app.clock.now())
        .await
        .unwrap();
    assert_eq!(purged, 2, "the answer and the refusal both expire");
    let again = send(&app, &path, &note, "n-1").await;
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    assert_eq!(app.event_count().await, count);
    // The refusal's key, free again, on another request: a new request.
    let other = send(
        &app,
        &path,
        &json!({ "audience": "internal", "text": "two" }),
        "s-1",
    )
    .await;
    other.assert_status(201);
    assert_eq!(app.event_count().await, count + 1);
}

both_backends!(
    stale_claim_keeps_its_request,
    rerun_after_lost_reply_writes_nothing,
    records_expire,
);
