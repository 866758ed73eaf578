//! API conventions beyond the basics: abandoned Idempotency-Key claims, `If-Match: *`,
//! field names on R7 refusals, unknown sub-resources.

use reqwest::Method;
use rollgate_e2e::flow::{self, ALICE};
use rollgate_e2e::{both_backends, json, Backend, TestApp};
use rollgate_store::{Clock, DatabasePool};

async fn abandoned_idempotency_claim_is_taken_over(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = flow::running_example(&app).await;
    let path = format!("/v1/rollouts/{id}/pause");
    let body = json!({ "reason": "checking dashboards" });
    // A claim left in progress by a process that died before answering this very request.
    let fingerprint = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(format!("POST {path}\n").as_bytes());
        h.update(serde_json::to_vec(&body).unwrap());
        hex::encode(h.finalize())
    };
    let store = app.db.store(Default::default()).await;
    let now = app.clock.now();
    match store.pool() {
        DatabasePool::Postgres(p) => sqlx::query(
            "INSERT INTO idempotency_records (principal, key, request_hash, status, body, created_at) \
             VALUES ('alice', 'k-1', $1, 0, '', $2)",
        )
        .bind(&fingerprint)
        .bind(now)
        .execute(&p)
        .await
        .map(|_| ())
        .unwrap(),
        DatabasePool::Sqlite(p) => sqlx::query(
            "INSERT INTO idempotency_records (principal, key, request_hash, status, body, created_at) \
             VALUES ('alice', 'k-1', ?, 0, '', ?)",
        )
        .bind(&fingerprint)
        .bind(rollgate_store::chain::format_time(&now))
        .execute(&p)
        .await
        .map(|_| ())
        .unwrap(),
    };
    let before = app.event_count().await;
    let token = ALICE.token(&app);
    let send = || {
        app.request(
            Method::POST,
            &path,
            Some(&token),
            Some(&body),
            &[("Idempotency-Key", "k-1")],
        )
    };
    // The claim's process is gone: the retry takes the claim over at once (no waiting for
    // a stale limit) and is handled once.
    let first = send().await;
    first.assert_status(200);
    assert_eq!(app.event_count().await, before + 1);
    let again = send().await;
    again.assert_status(200);
    assert_eq!(again.body, first.body);
    assert_eq!(app.event_count().await, before + 1);
}

async fn if_match_star_matches_any_version(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = flow::create(&app, rollgate_e2e::example_create_body()).await;
    let plan = rollgate_e2e::example_create_body()["plan"].clone();
    let r = app
        .request(
            Method::PUT,
            &format!("/v1/rollouts/{id}/plan"),
            Some(&ALICE.token(&app)),
            Some(&json!({ "plan": plan })),
            &[("If-Match", "*")],
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.header("etag"), Some("\"2\""));
}

async fn rollback_without_reason_names_the_field(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = flow::running_example(&app).await;
    let before = app.event_count().await;
    let r = app
        .post(
            &format!("/v1/rollouts/{id}/rollback"),
            &ALICE.token(&app),
            json!({}),
        )
        .await;
    r.assert_problem(422, Some("R7"));
    assert_eq!(r.body["errors"][0]["field"], "reason");
    assert_eq!(app.event_count().await, before);
}

async fn unknown_advance_request_is_not_found(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = flow::running_example(&app).await;
    let before = app.event_count().await;
    let rid = uuid::Uuid::new_v4();
    app.post(
        &format!("/v1/rollouts/{id}/advance-requests/{rid}/approvals"),
        &flow::BOB.token(&app),
        json!({ "decision": "approve" }),
    )
    .await
    .assert_problem(404, None);
    app.post(
        &format!("/v1/rollouts/{id}/advance"),
        &ALICE.token(&app),
        json!({ "request_id": rid.to_string() }),
    )
    .await
    .assert_problem(404, None);
    assert_eq!(app.event_count().await, before);
}

async fn stream_reads_honour_min_position(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = flow::running_example(&app).await;
    let head = app.event_count().await;
    let token = ALICE.token(&app);
    for path in [
        format!("/v1/rollouts/{id}"),
        format!("/v1/rollouts/{id}/events"),
    ] {
        let joiner = if path.contains('?') { '&' } else { '?' };
        app.get(&format!("{path}{joiner}min_position={head}"), &token)
            .await
            .assert_status(200);
        let r = app
            .get(
                &format!("{path}{joiner}min_position={}", head + 1000),
                &token,
            )
            .await;
        // Beyond the log's head: no write answered that position, so waiting cannot help.
        r.assert_problem(422, None);
        assert_eq!(r.body["errors"][0]["field"], "min_position");
        app.get(&format!("{path}{joiner}min_position=soon"), &token)
            .await
            .assert_problem(422, None);
    }
}

async fn metrics_count_requests_and_appends(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    flow::running_example(&app).await;
    let r = app.request(Method::GET, "/metrics", None, None, &[]).await;
    assert_eq!(r.status.as_u16(), 200);
    let text = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            "rollgate_http_requests_total{method=\"POST\",route=\"/v1/rollouts\",status=\"201\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("rollgate_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("rollgate_append_batch_duration_seconds_count"),
        "{text}"
    );
    let appended: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("rollgate_events_appended_total "))
        .expect("events counter")
        .parse()
        .unwrap();
    assert_eq!(appended as u64, app.event_count().await);
}

both_backends!(
    stream_reads_honour_min_position,
    metrics_count_requests_and_appends,
    abandoned_idempotency_claim_is_taken_over,
    if_match_star_matches_any_version,
    rollback_without_reason_names_the_field,
    unknown_advance_request_is_not_found,
);
