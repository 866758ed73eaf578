//! A whole rollout driven over HTTP with real tokens: the example plan from draft to
//! completed, through every stage, a rollback and a resume; then the automatic reactions
//! to a breached rollback criterion (roll back, or pause).

use chrono::Duration;
use reqwest::Method;
use rollgate_e2e::flow::{
    advance_example, approve, ok, readings, record, request_advance, rfc3339, rollout,
    running_example, sign_off, try_advance, ALICE, BOB, BOT, CAROL, EXAMPLE_SOAK, GINA, HEALTHY,
    SAM,
};
use rollgate_e2e::{both_backends, example_create_body, json, start_time, Backend, Reply, TestApp};
use rollgate_store::Clock;
use serde_json::Value;

/// A successful write: ETag and `stream_version` are the new stream version, `position`
/// is the global position of its last event (the head of the log: nothing else writes).
async fn assert_written(app: &TestApp, r: &Reply, version: u64, events: &[&str]) -> u64 {
    assert!(r.status.is_success(), "{} {}", r.status, r.body);
    assert_eq!(r.header("etag"), Some(format!("\"{version}\"").as_str()));
    assert_eq!(r.body["stream_version"], version, "{}", r.body);
    let position = r.body["position"].as_u64().expect("position");
    assert_eq!(position, app.event_count().await);
    assert_eq!(
        r.body["first_position"].as_u64(),
        Some(position + 1 - events.len() as u64)
    );
    let types: Vec<&str> = r.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(types, events);
    position
}

fn assert_at(view: &Value, status: &str, stage: Option<u64>, exposure: f64) {
    assert_eq!(view["status"], status, "{view}");
    assert_eq!(view["stage"].as_u64(), stage, "{view}");
    assert_eq!(
        view["exposure_percentage"].as_f64(),
        Some(exposure),
        "{view}"
    );
}

async fn whole_rollout(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    // Draft.
    let r = app
        .post("/v1/rollouts", &ALICE.token(&app), example_create_body())
        .await;
    r.assert_status(201);
    let pos_draft = assert_written(&app, &r, 1, &["RolloutCreated"]).await;
    let id = r.body["rollout_id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("/v1/rollouts/{id}").as_str())
    );
    let view = rollout(&app, &id).await;
    assert_at(&view, "draft", None, 0.0);
    assert_eq!(view["plan_revision"], 1);
    assert_eq!(view["unsigned_readiness"].as_array().unwrap().len(), 3);

    // Readiness, each item by its owner role; the last one makes the rollout ready.
    let r = sign_off(&app, &id, "qa-signoff", ALICE).await;
    assert_written(&app, &r, 2, &["ReadinessSignedOff"]).await;
    let r = sign_off(&app, &id, "runbook", SAM).await;
    assert_written(&app, &r, 3, &["ReadinessSignedOff"]).await;
    let r = sign_off(&app, &id, "support-faq", ALICE).await;
    let pos_ready = assert_written(&app, &r, 5, &["ReadinessSignedOff", "RolloutReady"]).await;
    assert_at(&rollout(&app, &id).await, "ready", None, 0.0);

    // Start: stage 0 (internal, 0 % plus the employees cohort).
    app.advance_clock(Duration::minutes(10));
    let r = ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/start"),
        ALICE,
        json!({}),
    )
    .await;
    assert_written(&app, &r, 6, &["RolloutStarted"]).await;
    let started_at = app.clock.now();
    let view = rollout(&app, &id).await;
    assert_at(&view, "running", Some(0), 0.0);
    assert_eq!(view["stage_name"], "internal");

    // Stage 0 → 1, step by step.
    let r = record(&app, &id, BOT, HEALTHY).await;
    assert_written(&app, &r, 7, &["ReadingsRecorded"]).await;
    app.advance_clock(Duration::seconds(EXAMPLE_SOAK[0]));
    let rid = request_advance(&app, &id).await;
    assert_eq!(rollout(&app, &id).await["open_request"], rid.as_str());
    let mut version = 8;
    for who in [BOB, CAROL, SAM] {
        let r = approve(&app, &id, &rid, who).await;
        assert_eq!(r.status.as_u16(), 201);
        version += 1;
        assert_written(&app, &r, version, &["AdvanceApproved"]).await;
    }
    let r = try_advance(&app, &id, &rid).await;
    r.assert_status(200);
    assert_written(&app, &r, 12, &["Advanced"]).await;
    let view = rollout(&app, &id).await;
    assert_at(&view, "running", Some(1), 5.0);
    assert_eq!(view["stage_name"], "beta-5");
    assert_eq!(view["open_request"], Value::Null);
    assert_eq!(view["requests"][&rid]["status"], "executed");

    // Stage 1 → 2 (general availability: approvers and a governance admin).
    advance_example(&app, &id, 1).await;
    assert_at(&rollout(&app, &id).await, "running", Some(2), 100.0);

    // A rollback by the SRE, with a reason, to stage 1.
    let r = ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/rollback"),
        SAM,
        json!({"to_stage": 1, "reason": "support tickets about double charges"}),
    )
    .await;
    assert_written(&app, &r, 19, &["RolledBack"]).await;
    let view = rollout(&app, &id).await;
    assert_at(&view, "rolled_back", Some(1), 5.0);
    let pos_rolled_back = r.body["position"].as_u64().unwrap();

    // Resume there; the soak and the readings start over in stage 1.
    let r = ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/resume"),
        ALICE,
        json!({}),
    )
    .await;
    assert_written(&app, &r, 20, &["Resumed"]).await;
    assert_at(&rollout(&app, &id).await, "running", Some(1), 5.0);
    let rid = request_advance(&app, &id).await;
    for who in [BOB, CAROL, GINA] {
        approve(&app, &id, &rid, who).await;
    }
    let r = try_advance(&app, &id, &rid).await;
    r.assert_problem(409, Some("R4"));
    assert!(
        r.body["detail"].as_str().unwrap().contains("soak"),
        "{}",
        r.body
    );
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/advance-requests/{rid}/withdraw"),
        ALICE,
        json!({}),
    )
    .await;

    // Back up to the last stage, and complete.
    advance_example(&app, &id, 1).await;
    assert_at(&rollout(&app, &id).await, "running", Some(2), 100.0);
    let r = ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/complete"),
        ALICE,
        json!({}),
    )
    .await;
    let final_version = r.body["stream_version"].as_u64().unwrap();
    let pos_completed = assert_written(&app, &r, final_version, &["RolloutCompleted"]).await;
    let r = app
        .get(&format!("/v1/rollouts/{id}"), &ALICE.token(&app))
        .await;
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{final_version}\"").as_str())
    );
    assert_at(&r.body, "completed", Some(2), 100.0);
    assert_eq!(r.body["version"], final_version);
    assert_eq!(r.body["as_of_position"], pos_completed);

    // As of a position: the state then, with the ETag of then.
    let r = app
        .get(
            &format!("/v1/rollouts/{id}?as_of={pos_ready}"),
            &ALICE.token(&app),
        )
        .await;
    r.assert_status(200);
    assert_at(&r.body, "ready", None, 0.0);
    assert_eq!(r.header("etag"), Some("\"5\""));
    assert_eq!(r.body["as_of_position"], pos_ready);
    let r = app
        .get(
            &format!("/v1/rollouts/{id}?as_of={pos_rolled_back}"),
            &ALICE.token(&app),
        )
        .await;
    assert_at(&r.body, "rolled_back", Some(1), 5.0);
    let r = app
        .get(
            &format!("/v1/rollouts/{id}?as_of={pos_draft}"),
            &ALICE.token(&app),
        )
        .await;
    assert_at(&r.body, "draft", None, 0.0);

    // As of a time: an hour after the start it was running at stage 0.
    let an_hour_in = rfc3339(started_at + Duration::hours(1));
    let r = app
        .get(
            &format!("/v1/rollouts/{id}?as_of={an_hour_in}"),
            &ALICE.token(&app),
        )
        .await;
    r.assert_status(200);
    assert_at(&r.body, "running", Some(0), 0.0);
    // Started, and the first readings recorded at the same instant.
    assert_eq!(r.header("etag"), Some("\"7\""));
    // Before it was created, it did not exist.
    let before = rfc3339(start_time() - Duration::seconds(1));
    app.get(
        &format!("/v1/rollouts/{id}?as_of={before}"),
        &ALICE.token(&app),
    )
    .await
    .assert_problem(404, None);

    // The events, in stream order, paged.
    let r = app
        .get(&format!("/v1/rollouts/{id}/events"), &ALICE.token(&app))
        .await;
    r.assert_status(200);
    let items = r.body["items"].as_array().unwrap().clone();
    assert_eq!(r.body["next_cursor"], Value::Null);
    assert_eq!(items.len() as u64, final_version);
    for (i, e) in items.iter().enumerate() {
        assert_eq!(e["version"], i as u64 + 1);
        assert!(e["recorded_at"].as_str().is_some());
        assert!(e["summary"].as_str().is_some_and(|s| !s.is_empty()));
    }
    let types: Vec<&str> = items.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        &types[..12],
        &[
            "RolloutCreated",
            "ReadinessSignedOff",
            "ReadinessSignedOff",
            "ReadinessSignedOff",
            "RolloutReady",
            "RolloutStarted",
            "ReadingsRecorded",
            "AdvanceRequested",
            "AdvanceApproved",
            "AdvanceApproved",
            "AdvanceApproved",
            "Advanced",
        ]
    );
    assert_eq!(types.last(), Some(&"RolloutCompleted"));
    for t in ["RolledBack", "Resumed", "AdvanceRequestWithdrawn"] {
        assert_eq!(types.iter().filter(|x| **x == t).count(), 1, "{t}");
    }
    assert_eq!(types.iter().filter(|x| **x == "Advanced").count(), 3);
    assert_eq!(items[0]["position"], pos_draft);
    assert_eq!(items[18]["position"], pos_rolled_back);
    assert_eq!(
        items[18]["payload"]["reason"],
        "support tickets about double charges"
    );
    let positions: Vec<u64> = items
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));

    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => format!("/v1/rollouts/{id}/events?limit=7"),
            Some(c) => format!("/v1/rollouts/{id}/events?limit=7&cursor={c}"),
        };
        let r = app.get(&path, &ALICE.token(&app)).await;
        r.assert_status(200);
        paged.extend(r.body["items"].as_array().unwrap().iter().cloned());
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, items);
}

/// A breached rollback criterion of a stage with `on_breach: rollback` rolls back to the
/// previous stage, in the same write as the readings.
async fn automatic_rollback(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running_example(&app).await;
    advance_example(&app, &id, 0).await;
    assert_at(&rollout(&app, &id).await, "running", Some(1), 5.0);

    // Readings inside the guardrails change nothing else.
    let r = record(&app, &id, BOT, &[("error_rate", 0.009, 5000)]).await;
    assert_eq!(r.body["events"], json!(["ReadingsRecorded"]));

    // error_rate > 0.01 over at least 1000 samples breaches stage 1.
    let r = record(&app, &id, BOT, &[("error_rate", 0.05, 2000)]).await;
    r.assert_status(200);
    let version = r.body["stream_version"].as_u64().unwrap();
    assert_written(
        &app,
        &r,
        version,
        &["ReadingsRecorded", "GuardrailBreached", "RolledBack"],
    )
    .await;
    assert_at(&rollout(&app, &id).await, "rolled_back", Some(0), 0.0);

    let events = app
        .get(&format!("/v1/rollouts/{id}/events"), &ALICE.token(&app))
        .await
        .body["items"]
        .as_array()
        .unwrap()
        .clone();
    let n = events.len();
    let breach = &events[n - 2]["payload"];
    assert_eq!(breach["criterion"]["metric"], "error_rate");
    assert_eq!(breach["reading"]["value"], 0.05);
    let rolled = &events[n - 1];
    assert_eq!(rolled["payload"]["automatic"], true);
    assert_eq!(rolled["payload"]["to_stage"], 0);
    assert_eq!(rolled["metadata"]["actor"]["id"], BOT.sub);

    // Too few samples is inconclusive: no reaction.
    let id2 = running_example(&app).await;
    let r = record(&app, &id2, BOT, &[("error_rate", 0.5, 199)]).await;
    assert_eq!(r.body["events"], json!(["ReadingsRecorded"]));
    // From stage 0 the known good state is 0 %.
    let r = record(&app, &id2, SAM, &[("error_rate", 0.5, 200)]).await;
    assert_eq!(
        r.body["events"],
        json!(["ReadingsRecorded", "GuardrailBreached", "RolledBack"])
    );
    assert_at(&rollout(&app, &id2).await, "rolled_back", None, 0.0);
}

/// A breached rollback criterion of a stage with `on_breach: pause` pauses the rollout.
async fn automatic_pause(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running_example(&app).await;
    advance_example(&app, &id, 0).await;
    advance_example(&app, &id, 1).await;
    assert_at(&rollout(&app, &id).await, "running", Some(2), 100.0);

    let body = readings(&app, &[("error_rate", 0.02, 20_000)]);
    let r = app
        .post(
            &format!("/v1/rollouts/{id}/metrics"),
            &BOT.token(&app),
            body,
        )
        .await;
    r.assert_status(200);
    let version = r.body["stream_version"].as_u64().unwrap();
    assert_written(
        &app,
        &r,
        version,
        &["ReadingsRecorded", "GuardrailBreached", "Paused"],
    )
    .await;
    assert_at(&rollout(&app, &id).await, "paused", Some(2), 100.0);

    // Paused already: a further breach is recorded but changes nothing.
    let r = record(&app, &id, BOT, &[("error_rate", 0.03, 20_000)]).await;
    assert_eq!(r.body["events"], json!(["ReadingsRecorded"]));

    // A person resumes (a governance decision recorded beside it) and completes.
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/decisions"),
        GINA,
        json!({
            "title": "Resume after the error-rate spike",
            "rationale": "the spike came from a misconfigured load test",
            "alternatives": ["roll back to beta-5"],
            "outcome": "resume",
        }),
    )
    .await;
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/resume"),
        SAM,
        json!({}),
    )
    .await;
    assert_at(&rollout(&app, &id).await, "running", Some(2), 100.0);
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/complete"),
        ALICE,
        json!({}),
    )
    .await;
    assert_at(&rollout(&app, &id).await, "completed", Some(2), 100.0);
}

both_backends!(whole_rollout, automatic_rollback, automatic_pause);
