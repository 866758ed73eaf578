//! Gates in the delivery path over HTTP, replaying the documented request bodies of Flagger
//! (tests/fixtures/flagger/) and the documented web metric of Argo Rollouts
//! (tests/fixtures/argo/): a scripted rollout where the gate says wait (quorum missing, soak
//! running, freeze, breach), then allow after the approvals, then deny after a rollback;
//! wrong or missing secrets answer 401 and record nothing; another team's rollout is 404; a
//! changed canary checksum waits.

use chrono::Duration;
use reqwest::Method;
use rollgate_e2e::flow::{
    approve, ok, record, request_advance, rfc3339, running_example, sign_off, try_advance, Person,
    ALICE, BOB, BOT, CAROL, GINA, OTTO, SAM, VIC,
};
use rollgate_e2e::{both_backends, example_create_body, json, Backend, Reply, TestApp};
use rollgate_store::Clock;
use serde_json::Value;

const FLAGGER_PAYLOAD: &str = include_str!("../fixtures/flagger/webhook-payload.json");
const ARGO_METRIC: &str = include_str!("../fixtures/argo/web-metric.yaml");

/// The example rollout, but stage 0 pauses on a breach (so that a breach is a reason to
/// wait, not an automatic rollback), running at stage 0.
async fn running(app: &TestApp) -> String {
    let mut body = example_create_body();
    body["plan"]["stages"][0]["on_breach"] = json!("pause");
    let id = rollgate_e2e::flow::create(app, body).await;
    for (item, who) in [
        ("qa-signoff", ALICE),
        ("runbook", SAM),
        ("support-faq", ALICE),
    ] {
        sign_off(app, &id, item, who).await;
    }
    ok(
        app,
        Method::POST,
        &format!("/v1/rollouts/{id}/start"),
        ALICE,
        json!({}),
    )
    .await;
    id
}

struct Bound {
    id: String,
    secret: String,
}

async fn bind(app: &TestApp, rollout: &str, target: Value) -> Bound {
    let r = app
        .post(
            "/v1/bindings",
            &GINA.token(app),
            json!({"rollout_id": rollout, "target": target}),
        )
        .await;
    r.assert_status(201);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    Bound {
        id: r.body["binding_id"].as_str().unwrap().to_owned(),
        secret: r.body["secret"].as_str().unwrap().to_owned(),
    }
}

/// Flagger's documented body, with the webhook's metadata for rollgate (Flagger copies a
/// webhook's static `metadata` map into every call).
fn flagger_body(
    b: &Bound,
    hook: &str,
    stage: Option<&str>,
    secret: Option<&str>,
    checksum: &str,
) -> Value {
    let mut body: Value = serde_json::from_str(FLAGGER_PAYLOAD).unwrap();
    body["checksum"] = json!(checksum);
    let meta = body["metadata"].as_object_mut().unwrap();
    meta.insert("hook".into(), json!(hook));
    meta.insert("binding_id".into(), json!(b.id));
    if let Some(s) = secret {
        meta.insert("secret".into(), json!(s));
    }
    if let Some(s) = stage {
        meta.insert("stage".into(), json!(s));
    }
    body
}

/// What Flagger sees: status and the body as text.
async fn flagger(app: &TestApp, body: &Value) -> (u16, String) {
    let r = app
        .client
        .post(format!("{}/v1/integrations/flagger", app.address))
        .header("Content-Type", "application/json")
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .expect("sent");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// Flagger's confirm-promotion for stage 1 with the canary's original checksum.
async fn promote(app: &TestApp, b: &Bound) -> (u16, String) {
    flagger(
        app,
        &flagger_body(
            b,
            "confirm-promotion",
            Some("1"),
            Some(&b.secret),
            "85d557f47b",
        ),
    )
    .await
}

/// The `jsonPath` of the documented Argo metric, adapted to rollgate's answer: `{$.result}`.
async fn argo(app: &TestApp, b: &Bound, secret: &str) -> Reply {
    app.request(
        Method::GET,
        &format!("/v1/integrations/argo/{}/gate?stage=1", b.id),
        Some(secret),
        None,
        &[],
    )
    .await
}

async fn argo_word(app: &TestApp, b: &Bound) -> String {
    let r = argo(app, b, &b.secret).await;
    r.assert_status(200);
    r.body["result"].as_str().expect("result").to_owned()
}

async fn gate(app: &TestApp, id: &str, who: Person) -> Reply {
    app.get(&format!("/v1/rollouts/{id}/gate?stage=1"), &who.token(app))
        .await
}

async fn scripted_rollout(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = running(&app).await;
    let canary = bind(
        &app,
        &id,
        json!({"kind": "flagger_canary", "namespace": "test", "name": "podinfo"}),
    )
    .await;
    let argo_binding = bind(
        &app,
        &id,
        json!({"kind": "argo_rollout", "namespace": "shop", "name": "checkout"}),
    )
    .await;

    // no request yet: wait
    let (status, line) = promote(&app, &canary).await;
    assert_eq!(status, 403, "{line}");
    assert!(line.contains("no open advance request"), "{line}");
    assert!(!line.contains('\n'));
    assert_eq!(argo_word(&app, &argo_binding).await, "pending");

    // quorum missing
    let rid = request_advance(&app, &id).await;
    approve(&app, &id, &rid, BOB).await;
    let (status, line) = promote(&app, &canary).await;
    assert_eq!(status, 403);
    assert!(line.contains("more approval"), "{line}");
    let g = gate(&app, &id, VIC).await;
    g.assert_status(200);
    assert_eq!(g.body["verdict"], "wait");
    let quorum: Vec<&Value> = g.body["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["code"] == "quorum")
        .collect();
    assert_eq!(quorum[0]["approved_by"][0]["id"], "bob");

    // soak running
    approve(&app, &id, &rid, CAROL).await;
    approve(&app, &id, &rid, SAM).await;
    record(&app, &id, BOT, rollgate_e2e::flow::HEALTHY).await;
    let (status, line) = promote(&app, &canary).await;
    assert_eq!(status, 403);
    assert!(line.contains("soak running"), "{line}");

    // freeze in force
    app.advance_clock(Duration::seconds(86_400));
    let starts = rfc3339(app.clock.now());
    let ends = rfc3339(app.clock.now() + Duration::hours(1));
    let freeze = ok(
        &app,
        Method::POST,
        "/v1/policies/web/freezes",
        GINA,
        json!({"starts_at": starts, "ends_at": ends, "reason": "Black Friday"}),
    )
    .await;
    let (status, line) = promote(&app, &canary).await;
    assert_eq!(status, 403);
    assert!(
        line.contains("freeze") && line.contains("Black Friday"),
        "{line}"
    );
    assert_eq!(argo_word(&app, &argo_binding).await, "pending");
    let fid = freeze.body["freeze_id"].as_str().unwrap().to_owned();
    ok(
        &app,
        Method::DELETE,
        &format!("/v1/policies/web/freezes/{fid}"),
        GINA,
        json!({}),
    )
    .await;

    // a breach pauses; resumed with the breach on record it still waits
    record(&app, &id, BOT, &[("error_rate", 0.05, 5_000)]).await;
    let (status, line) = promote(&app, &canary).await;
    assert_eq!(status, 403);
    assert!(line.contains("paused"), "{line}");
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/resume"),
        SAM,
        json!({}),
    )
    .await;
    let (status, line) = promote(&app, &canary).await;
    assert_eq!(status, 403);
    assert!(line.contains("breached"), "{line}");

    // healthy again: allowed after the approvals
    record(&app, &id, BOT, rollgate_e2e::flow::HEALTHY).await;
    let (status, line) = promote(&app, &canary).await;
    assert_eq!(status, 200, "{line}");
    assert_eq!(argo_word(&app, &argo_binding).await, "approved");
    assert_eq!(gate(&app, &id, BOT).await.body["result"], "approved");

    // the same answer polled again records nothing; a new checksum waits
    let before = app.event_count().await;
    assert_eq!(promote(&app, &canary).await.0, 200);
    assert_eq!(
        app.event_count().await,
        before,
        "an unchanged answer is not recorded again"
    );
    let (status, line) = flagger(
        &app,
        &flagger_body(
            &canary,
            "confirm-promotion",
            Some("1"),
            Some(&canary.secret),
            "6c9f1e2a3b",
        ),
    )
    .await;
    assert_eq!(status, 403);
    assert!(line.contains("canary changed since approval"), "{line}");

    // the rollback hook does not fire while all is well
    let rollback_hook = flagger_body(
        &canary,
        "rollback",
        None,
        Some(&canary.secret),
        "85d557f47b",
    );
    let (status, line) = flagger(&app, &rollback_hook).await;
    assert_eq!(status, 403, "{line}");

    // advance, then roll back: deny, and the rollback hook fires
    try_advance(&app, &id, &rid).await.assert_status(200);
    assert_eq!(
        promote(&app, &canary).await.0,
        200,
        "stage 1 already reached"
    );
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/rollback"),
        SAM,
        json!({"reason": "error budget"}),
    )
    .await;
    let (status, line) = promote(&app, &canary).await;
    assert_eq!(status, 403);
    assert!(line.contains("rolled back"), "{line}");
    assert_eq!(argo_word(&app, &argo_binding).await, "rejected");
    assert_eq!(gate(&app, &id, VIC).await.body["verdict"], "deny");
    let (status, line) = flagger(&app, &rollback_hook).await;
    assert_eq!(status, 200, "{line}");

    // the answers were recorded, each change once
    let answers = app
        .get(
            &format!("/v1/bindings/{}/answers", canary.id),
            &VIC.token(&app),
        )
        .await;
    answers.assert_status(200);
    let summaries: Vec<&str> = answers.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["summary"].as_str().unwrap())
        .collect();
    assert!(summaries.len() >= 9, "{summaries:#?}");
    assert!(
        summaries
            .iter()
            .all(|s| s.starts_with("flagger:test/podinfo (")),
        "{summaries:#?}"
    );
    assert!(summaries
        .iter()
        .any(|s| s.contains("canary changed since approval")));
}

async fn secrets_and_teams(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = running_example(&app).await;
    let canary = bind(
        &app,
        &id,
        json!({"kind": "flagger_canary", "namespace": "test", "name": "podinfo"}),
    )
    .await;

    // wrong or missing secret: 401, nothing recorded
    for secret in [None, Some("rgb_wrong"), Some("")] {
        let before = app.event_count().await;
        let (status, body) = flagger(
            &app,
            &flagger_body(&canary, "confirm-promotion", None, secret, "85d557f47b"),
        )
        .await;
        assert_eq!(status, 401, "{secret:?}: {body}");
        assert!(body.contains("binding secret"), "{body}");
        assert_eq!(app.event_count().await, before, "{secret:?}");
    }
    let before = app.event_count().await;
    argo(&app, &canary, "rgb_wrong")
        .await
        .assert_problem(401, None);
    app.request(
        Method::GET,
        &format!("/v1/integrations/argo/{}/gate", canary.id),
        None,
        None,
        &[],
    )
    .await
    .assert_problem(401, None);
    assert_eq!(app.event_count().await, before);

    // the documented body without rollgate's metadata: 422 naming the fields
    let raw: Value = serde_json::from_str(FLAGGER_PAYLOAD).unwrap();
    let before = app.event_count().await;
    let r = app
        .request(
            Method::POST,
            "/v1/integrations/flagger",
            None,
            Some(&raw),
            &[],
        )
        .await;
    r.assert_problem(422, None);
    assert!(r.body.to_string().contains("metadata.hook"), "{}", r.body);
    assert_eq!(app.event_count().await, before);

    // rotation: the old secret stops working at once
    let rotated = ok(
        &app,
        Method::POST,
        &format!("/v1/bindings/{}/rotate-secret", canary.id),
        GINA,
        json!({}),
    )
    .await;
    let new_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, canary.secret);
    let (status, _) = promote(&app, &canary).await;
    assert_eq!(status, 401);
    let (status, line) = flagger(
        &app,
        &flagger_body(
            &canary,
            "confirm-promotion",
            Some("1"),
            Some(&new_secret),
            "85d557f47b",
        ),
    )
    .await;
    assert_eq!(status, 403, "{line}");
    // revoked: 401
    ok(
        &app,
        Method::POST,
        &format!("/v1/bindings/{}/revoke", canary.id),
        GINA,
        json!({"reason": "canary deleted"}),
    )
    .await;
    let (status, _) = flagger(
        &app,
        &flagger_body(
            &canary,
            "confirm-promotion",
            Some("1"),
            Some(&new_secret),
            "85d557f47b",
        ),
    )
    .await;
    assert_eq!(status, 401);

    // the binding never shows its secret or hash again
    let shown = app
        .get(&format!("/v1/bindings/{}", canary.id), &VIC.token(&app))
        .await;
    shown.assert_status(200);
    let text = shown.body.to_string();
    assert!(
        !text.contains(&new_secret) && !text.contains("secret_hash"),
        "{text}"
    );

    // another team: 404 for the gate, the binding and binding a rollout
    app.refused(
        Method::GET,
        &format!("/v1/rollouts/{id}/gate"),
        Some(&OTTO.token(&app)),
        None,
        404,
        None,
    )
    .await;
    app.refused(
        Method::GET,
        &format!("/v1/bindings/{}", canary.id),
        Some(&OTTO.token(&app)),
        None,
        404,
        None,
    )
    .await;
    app.refused(
        Method::POST,
        "/v1/bindings",
        Some(&OTTO.token(&app)),
        Some(&json!({"rollout_id": id, "target": {"kind": "flag_key", "key": "x"}})),
        404,
        None,
    )
    .await;
    // only governance admins bind
    app.refused(
        Method::POST,
        "/v1/bindings",
        Some(&ALICE.token(&app)),
        Some(&json!({"rollout_id": id, "target": {"kind": "flag_key", "key": "x"}})),
        403,
        Some("permission"),
    )
    .await;
    app.refused(
        Method::POST,
        "/v1/bindings",
        Some(&GINA.token(&app)),
        Some(&json!({"rollout_id": id, "target": {"kind": "flagger_canary", "namespace": "Bad", "name": "x"}})),
        422,
        None,
    )
    .await;

    // every role of the team reads the gate, the service role included
    for who in [ALICE, BOB, SAM, GINA, VIC, BOT, rollgate_e2e::flow::AUDREY] {
        let r = app
            .get(&format!("/v1/rollouts/{id}/gate"), &who.token(&app))
            .await;
        r.assert_status(200);
        assert_eq!(r.body["transition"]["kind"], "advance", "{}", who.sub);
    }
}

/// R12 on binding events, as for every other command: a person's create and a tool's
/// answer carry the actor and its roles, the team, request and correlation ids, the policy
/// version in force and the recorded time.
async fn binding_events_carry_r12_metadata(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = running_example(&app).await;
    let canary = bind(
        &app,
        &id,
        json!({"kind": "flagger_canary", "namespace": "test", "name": "podinfo"}),
    )
    .await;
    let (status, line) = promote(&app, &canary).await;
    assert!(status == 200 || status == 403, "{status}: {line}");

    let export = app
        .client
        .get(format!("{}/v1/audit/export", app.address))
        .bearer_auth(app.token("auditor-all", &["auditor"], &["*"]))
        .send()
        .await
        .expect("export request");
    assert_eq!(export.status().as_u16(), 200);
    let text = export.text().await.unwrap();
    let stream = format!("binding-{}", canary.id);
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("an NDJSON line"))
        .filter(|e| e["stream"] == stream.as_str())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["BindingCreated", "GateAnswered"], "{text}");
    for e in &events {
        let md = &e["metadata"];
        assert_eq!(md["team"], "web", "{e}");
        assert!(
            md["request_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{e}"
        );
        assert!(
            md["correlation_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{e}"
        );
        assert!(md["policy_version"].is_u64(), "{e}");
        assert!(e["recorded_at"].as_str().is_some(), "{e}");
    }
    assert_eq!(events[0]["metadata"]["actor"]["id"], GINA.sub);
    assert_eq!(
        events[0]["metadata"]["actor"]["roles"],
        json!(["governance_admin"])
    );
    assert_eq!(events[1]["metadata"]["actor"]["id"], "flagger:test/podinfo");
    assert_eq!(events[1]["metadata"]["actor"]["roles"], json!(["service"]));
}

#[test]
fn the_argo_fixture_names_a_json_path() {
    // the documented metric picks a field with `jsonPath`; rollgate's answer has `result`
    assert!(ARGO_METRIC.contains("jsonPath: \"{$.data.ok}\""));
    assert!(ARGO_METRIC.contains("Authorization"));
}

both_backends!(
    scripted_rollout,
    secrets_and_teams,
    binding_events_carry_r12_metadata
);
