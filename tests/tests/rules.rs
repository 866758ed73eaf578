//! Every governance rule (R1–R12) refused over HTTP with its status and `rule` id, and
//! every refusal shown to write nothing. The plan here is small and exact: three stages,
//! an hour of soak, a success criterion on `latency_ms` and a rollback criterion on
//! `error_rate` (breach: pause), no readiness checklist (ready at once).

use chrono::Duration;
use reqwest::Method;
use rollgate_e2e::flow::{
    approve, now, ok, record, request_advance, rfc3339, rollout, try_advance, Person, ALICE,
    AUDREY, BOB, BOT, CAROL, GINA, GREG, OTTO, SAM, VIC,
};
use rollgate_e2e::{both_backends, json, Backend, TestApp};
use rollgate_store::Clock;
use serde_json::Value;

const SOAK: i64 = 3600;

/// Holds a release manager's and an approver's roles.
const ALEX: Person = Person {
    sub: "alex",
    roles: &["release_manager", "approver"],
    teams: &["web"],
};
/// Approver and SRE at once: counts toward one quorum rule only.
const DANA: Person = Person {
    sub: "dana",
    roles: &["approver", "sre"],
    teams: &["web"],
};
/// Governance admin who is also an SRE (and so may request a deviation).
const GWEN: Person = Person {
    sub: "gwen",
    roles: &["governance_admin", "sre"],
    teams: &["web"],
};

fn plan() -> Value {
    let criteria = json!({
        "success_criteria": [
            {"metric": "latency_ms", "comparator": "lte", "threshold": 300, "min_samples": 100}
        ],
        "rollback_criteria": [
            {"metric": "error_rate", "comparator": "gt", "threshold": 0.05, "min_samples": 100}
        ],
        "on_breach": "pause",
    });
    let stage = |name: &str, pct: f64, soak: i64, approvals: Value| {
        let mut s = criteria.clone();
        s["name"] = json!(name);
        s["audience"] = json!({"percentage": pct});
        s["min_soak_seconds"] = json!(soak);
        s["approvals"] = approvals;
        s
    };
    json!({
        "owner": "alice",
        "stages": [
            stage("canary", 1.0, SOAK, json!([{"roles": ["approver"], "count": 1}])),
            stage("half", 50.0, SOAK, json!([
                {"roles": ["approver"], "count": 2}, {"roles": ["sre"], "count": 1}
            ])),
            stage("all", 100.0, 0, json!([
                {"roles": ["approver"], "count": 1}, {"roles": ["governance_admin"], "count": 1}
            ])),
        ],
    })
}

fn create_body() -> Value {
    json!({
        "feature_key": "search-ranking",
        "title": "New search ranking",
        "team": "web",
        "plan": plan(),
    })
}

/// A rollout of [`plan`] running at stage 0 (started by `by`).
async fn running_as(app: &TestApp, by: Person) -> String {
    let r = app
        .post("/v1/rollouts", &by.token(app), create_body())
        .await;
    r.assert_status(201);
    assert_eq!(r.body["events"], json!(["RolloutCreated", "RolloutReady"]));
    let id = r.body["rollout_id"].as_str().unwrap().to_owned();
    ok(
        app,
        Method::POST,
        &format!("/v1/rollouts/{id}/start"),
        by,
        json!({}),
    )
    .await;
    id
}

async fn running(app: &TestApp) -> String {
    running_as(app, ALICE).await
}

const GOOD: &[(&str, f64, u64)] = &[("latency_ms", 200.0, 500), ("error_rate", 0.01, 500)];

/// Healthy readings and the soak: only approvals (and freezes) can stand in the way.
async fn soaked(app: &TestApp, id: &str) {
    record(app, id, BOT, GOOD).await;
    app.advance_clock(Duration::seconds(SOAK));
}

/// The quorum of stage 1: two approvers and an SRE.
async fn full_quorum(app: &TestApp, id: &str, rid: &str) {
    for who in [BOB, CAROL, SAM] {
        approve(app, id, rid, who).await;
    }
}

fn path(id: &str, rest: &str) -> String {
    format!("/v1/rollouts/{id}{rest}")
}

fn approval(rid: &str) -> String {
    format!("/advance-requests/{rid}/approvals")
}

fn approve_body() -> Value {
    json!({"decision": "approve"})
}

fn detail(r: &rollgate_e2e::Reply) -> &str {
    r.body["detail"].as_str().unwrap_or_default()
}

/// `POST .../advance` as ALICE that must be refused with 409 and `rule`, writing nothing.
async fn advance_refused(app: &TestApp, id: &str, rid: &str, rule: &str) -> String {
    let r = app
        .refused(
            Method::POST,
            &path(id, "/advance"),
            Some(&ALICE.token(app)),
            Some(&json!({ "request_id": rid })),
            409,
            Some(rule),
        )
        .await;
    assert_eq!(r.body["type"], "urn:rollgate:problem:rule-refused");
    detail(&r).to_owned()
}

// R1 -----------------------------------------------------------------------------------

async fn r1_quorum(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running(&app).await;
    soaked(&app, &id).await;
    let rid = request_advance(&app, &id).await;
    let p = path(&id, &approval(&rid));
    // Stage 1 names approver and sre: nobody else may approve or reject.
    for who in [GINA, BOT, ALICE] {
        let r = app
            .refused(
                Method::POST,
                &p,
                Some(&who.token(&app)),
                Some(&approve_body()),
                403,
                Some("R1"),
            )
            .await;
        assert!(detail(&r).contains("R1"), "{}", r.body);
    }
    app.refused(
        Method::POST,
        &p,
        Some(&GINA.token(&app)),
        Some(&json!({"decision": "reject", "comment": "no"})),
        403,
        Some("R1"),
    )
    .await;

    // One person counts toward one rule only: approver+sre and one approver are two
    // people, and the quorum needs three.
    approve(&app, &id, &rid, DANA).await;
    approve(&app, &id, &rid, BOB).await;
    let why = advance_refused(&app, &id, &rid, "R4").await;
    assert!(why.contains("approvals"), "{why}");
    approve(&app, &id, &rid, CAROL).await;
    try_advance(&app, &id, &rid).await.assert_status(200);
    let view = rollout(&app, &id).await;
    assert_eq!(view["stage"], 1);
}

// R2 -----------------------------------------------------------------------------------

async fn r2_no_self_approval(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running_as(&app, ALEX).await;
    let r = app
        .post(
            &path(&id, "/advance-requests"),
            &ALEX.token(&app),
            json!({}),
        )
        .await;
    r.assert_status(201);
    let rid = r.body["request_id"].as_str().unwrap().to_owned();
    let p = path(&id, &approval(&rid));
    app.refused(
        Method::POST,
        &p,
        Some(&ALEX.token(&app)),
        Some(&approve_body()),
        403,
        Some("R2"),
    )
    .await;
    app.refused(
        Method::POST,
        &p,
        Some(&ALEX.token(&app)),
        Some(&json!({"decision": "reject", "comment": "changed my mind"})),
        403,
        Some("R2"),
    )
    .await;
    // Somebody else may.
    approve(&app, &id, &rid, BOB).await;
}

// R3 -----------------------------------------------------------------------------------

async fn r3_distinct_approvers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running(&app).await;
    let rid = request_advance(&app, &id).await;
    approve(&app, &id, &rid, BOB).await;
    let p = path(&id, &approval(&rid));
    app.refused(
        Method::POST,
        &p,
        Some(&BOB.token(&app)),
        Some(&approve_body()),
        409,
        Some("R3"),
    )
    .await;
    // Bob's approval counted once: two approvers and an SRE are still needed.
    approve(&app, &id, &rid, SAM).await;
    soaked(&app, &id).await;
    let why = advance_refused(&app, &id, &rid, "R4").await;
    assert!(why.contains("1 more of approver"), "{why}");
}

// R4 -----------------------------------------------------------------------------------

async fn r4_advance_preconditions(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    // Approvals: everything else is met.
    let id = running(&app).await;
    soaked(&app, &id).await;
    let rid = request_advance(&app, &id).await;
    approve(&app, &id, &rid, BOB).await;
    approve(&app, &id, &rid, SAM).await;
    let why = advance_refused(&app, &id, &rid, "R4").await;
    assert!(why.contains("approvals") && !why.contains("soak"), "{why}");

    // Soak: approvals and readings are fine, the hour has not passed.
    let id = running(&app).await;
    record(&app, &id, BOT, GOOD).await;
    let rid = request_advance(&app, &id).await;
    full_quorum(&app, &id, &rid).await;
    app.advance_clock(Duration::seconds(SOAK - 60));
    let why = advance_refused(&app, &id, &rid, "R4").await;
    assert!(why.contains("soak") && !why.contains("approvals"), "{why}");
    app.advance_clock(Duration::seconds(60));
    try_advance(&app, &id, &rid).await.assert_status(200);

    // Success criteria not met by the recorded readings.
    let id = running(&app).await;
    record(
        &app,
        &id,
        BOT,
        &[("latency_ms", 450.0, 500), ("error_rate", 0.01, 500)],
    )
    .await;
    app.advance_clock(Duration::seconds(SOAK));
    let rid = request_advance(&app, &id).await;
    full_quorum(&app, &id, &rid).await;
    let why = advance_refused(&app, &id, &rid, "R4").await;
    assert!(
        why.contains("success_criteria") && why.contains("latency_ms"),
        "{why}"
    );
    // Inconclusive (too few samples) passes only with a recorded rationale.
    record(&app, &id, BOT, &[("latency_ms", 200.0, 10)]).await;
    let why = advance_refused(&app, &id, &rid, "R4").await;
    assert!(why.contains("inconclusive"), "{why}");
    let r = app
        .post(
            &path(&id, "/advance"),
            &ALICE.token(&app),
            json!({"request_id": rid, "inconclusive_override": "canary traffic is low on Sundays"}),
        )
        .await;
    r.assert_status(200);

    // A breached rollback criterion: the breach paused the rollout; resumed, the breach
    // still blocks the advance.
    let id = running(&app).await;
    record(&app, &id, BOT, &[("latency_ms", 200.0, 500)]).await;
    let r = record(&app, &id, BOT, &[("error_rate", 0.2, 500)]).await;
    assert_eq!(
        r.body["events"],
        json!(["ReadingsRecorded", "GuardrailBreached", "Paused"])
    );
    ok(&app, Method::POST, &path(&id, "/resume"), SAM, json!({})).await;
    app.advance_clock(Duration::seconds(SOAK));
    let rid = request_advance(&app, &id).await;
    full_quorum(&app, &id, &rid).await;
    let why = advance_refused(&app, &id, &rid, "R4").await;
    assert!(
        why.contains("rollback_criteria") && why.contains("breached"),
        "{why}"
    );
    assert!(!why.contains("success_criteria"), "{why}");
}

// R5 -----------------------------------------------------------------------------------

async fn r5_rejection_closes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running(&app).await;
    soaked(&app, &id).await;
    let rid = request_advance(&app, &id).await;
    approve(&app, &id, &rid, CAROL).await;
    let r = ok(
        &app,
        Method::POST,
        &path(&id, &approval(&rid)),
        BOB,
        json!({"decision": "reject", "comment": "the dashboards are not ready"}),
    )
    .await;
    assert_eq!(r.body["events"], json!(["AdvanceRejected"]));
    let p = path(&id, &approval(&rid));
    app.refused(
        Method::POST,
        &p,
        Some(&SAM.token(&app)),
        Some(&approve_body()),
        409,
        Some("R5"),
    )
    .await;
    advance_refused(&app, &id, &rid, "R5").await;
    app.refused(
        Method::POST,
        &path(&id, &format!("/advance-requests/{rid}/withdraw")),
        Some(&ALICE.token(&app)),
        None,
        409,
        Some("R5"),
    )
    .await;
    // A new request starts a new round: Carol's earlier approval does not carry over.
    let rid2 = request_advance(&app, &id).await;
    approve(&app, &id, &rid2, BOB).await;
    approve(&app, &id, &rid2, SAM).await;
    let why = advance_refused(&app, &id, &rid2, "R4").await;
    assert!(why.contains("approvals"), "{why}");
    approve(&app, &id, &rid2, CAROL).await;
    try_advance(&app, &id, &rid2).await.assert_status(200);
}

// R6 -----------------------------------------------------------------------------------

async fn r6_revision_invalidates_approvals(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running(&app).await;
    soaked(&app, &id).await;
    let rid = request_advance(&app, &id).await;
    full_quorum(&app, &id, &rid).await;

    let version = rollout(&app, &id).await["version"].as_u64().unwrap();
    let mut revised = plan();
    revised["stages"][2]["informed"] = json!(["#search-releases"]);
    let etag = format!("\"{version}\"");
    let r = app
        .request(
            Method::PUT,
            &path(&id, "/plan"),
            Some(&ALICE.token(&app)),
            Some(&json!({ "plan": revised })),
            &[("if-match", &etag)],
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body["events"], json!(["PlanRevised"]));
    assert_eq!(
        r.header("etag"),
        Some(format!("\"{}\"", version + 1).as_str())
    );
    assert_eq!(rollout(&app, &id).await["plan_revision"], 2);

    let why = advance_refused(&app, &id, &rid, "R6").await;
    assert!(why.contains("revision"), "{why}");
    // Approvals given again, under revision 2, count.
    full_quorum(&app, &id, &rid).await;
    try_advance(&app, &id, &rid).await.assert_status(200);
}

async fn r6_approvals_expire(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .request(
            Method::PUT,
            "/v1/policies/web",
            Some(&GINA.token(&app)),
            Some(&json!({"approval_validity_seconds": 600})),
            &[],
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body["events"], json!(["PolicyPublished"]));

    let id = running(&app).await;
    record(&app, &id, BOT, GOOD).await;
    let rid = request_advance(&app, &id).await;
    full_quorum(&app, &id, &rid).await;
    // The soak takes an hour; the approvals lasted ten minutes.
    app.advance_clock(Duration::seconds(SOAK));
    let why = advance_refused(&app, &id, &rid, "R6").await;
    assert!(why.contains("expired"), "{why}");
    full_quorum(&app, &id, &rid).await;
    app.advance_clock(Duration::seconds(599));
    let r = try_advance(&app, &id, &rid).await;
    r.assert_status(200);

    let events = app
        .get(&path(&id, "/events"), &ALICE.token(&app))
        .await
        .body["items"]
        .clone();
    let last = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "Advanced");
    assert_eq!(last["metadata"]["policy_version"], 1);
    assert_eq!(last["payload"]["policy_version"], 1);
}

// R7 -----------------------------------------------------------------------------------

async fn r7_rollback(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running(&app).await;
    let p = path(&id, "/rollback");
    let sam = SAM.token(&app);
    // A reason is required (422 naming R7).
    for body in [
        json!({}),
        json!({"reason": "   "}),
        json!({"reason": "", "to_stage": null}),
    ] {
        app.refused(Method::POST, &p, Some(&sam), Some(&body), 422, Some("R7"))
            .await;
    }
    // Only release managers and SREs roll back by hand.
    let body = json!({"reason": "error spike"});
    for who in [BOB, GINA, BOT] {
        app.refused(
            Method::POST,
            &p,
            Some(&who.token(&app)),
            Some(&body),
            403,
            Some("R7"),
        )
        .await;
    }
    // It needs no approval, and is allowed while an advance request is open.
    request_advance(&app, &id).await;
    let r = ok(&app, Method::POST, &p, SAM, body.clone()).await;
    assert_eq!(r.body["events"], json!(["RolledBack"]));
    let view = rollout(&app, &id).await;
    assert_eq!(view["status"], "rolled_back");
    assert_eq!(view["stage"], Value::Null);
    assert_eq!(view["open_request"], Value::Null);
    ok(&app, Method::POST, &path(&id, "/resume"), ALICE, json!({})).await;
    let id2 = running(&app).await;
    ok(&app, Method::POST, &path(&id2, "/rollback"), ALICE, body).await;
}

// R8 -----------------------------------------------------------------------------------

async fn r8_deviations(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running(&app).await;
    record(&app, &id, BOT, GOOD).await;
    let rid = request_advance(&app, &id).await;
    full_quorum(&app, &id, &rid).await;
    // Not soaked: refused by R4.
    advance_refused(&app, &id, &rid, "R4").await;

    let expires = rfc3339(app.clock.now() + Duration::days(1));
    let deviation = |rules: Value| {
        json!({
            "rules": rules,
            "justification": "the canary is an internal cohort that has been live for a week",
            "expires_at": expires,
        })
    };
    // Only the waivable rules may be named.
    let r = app
        .refused(
            Method::POST,
            &path(&id, "/deviations"),
            Some(&ALICE.token(&app)),
            Some(&deviation(json!(["R1"]))),
            422,
            None,
        )
        .await;
    assert_eq!(r.body["errors"][0]["field"], "rules[0]");

    let r = ok(
        &app,
        Method::POST,
        &path(&id, "/deviations"),
        ALICE,
        deviation(json!(["R4"])),
    )
    .await;
    assert_eq!(r.status.as_u16(), 201);
    let did = r.body["deviation_id"].as_str().unwrap().to_owned();
    let decide = format!("/v1/deviations/{did}/decision");
    let grant = json!({"decision": "grant", "comment": "accepted"});
    // Only a governance admin grants...
    for who in [BOB, ALICE, SAM] {
        app.refused(
            Method::POST,
            &decide,
            Some(&who.token(&app)),
            Some(&grant),
            403,
            Some("R8"),
        )
        .await;
    }
    // ...and not one who requested it.
    let r = ok(
        &app,
        Method::POST,
        &path(&id, "/deviations"),
        GWEN,
        deviation(json!(["R4"])),
    )
    .await;
    let own = r.body["deviation_id"].as_str().unwrap().to_owned();
    app.refused(
        Method::POST,
        &format!("/v1/deviations/{own}/decision"),
        Some(&GWEN.token(&app)),
        Some(&grant),
        403,
        Some("R8"),
    )
    .await;

    let r = ok(&app, Method::POST, &decide, GINA, grant.clone()).await;
    assert_eq!(r.body["events"], json!(["DeviationGranted"]));
    // Decided once.
    app.refused(
        Method::POST,
        &decide,
        Some(&GREG.token(&app)),
        Some(&grant),
        409,
        Some("R8"),
    )
    .await;

    // The deviation lets exactly this advance past the soak.
    let r = try_advance(&app, &id, &rid).await;
    r.assert_status(200);
    let events = app
        .get(&path(&id, "/events"), &ALICE.token(&app))
        .await
        .body["items"]
        .clone();
    let advanced = events.as_array().unwrap().last().unwrap().clone();
    assert_eq!(advanced["type"], "Advanced");
    assert_eq!(advanced["payload"]["deviations_used"], json!([did]));
    assert_eq!(advanced["payload"]["waived"][0]["condition"], "soak");
    assert_eq!(
        rollout(&app, &id).await["deviations"][&did]["status"],
        "used"
    );

    // Single use: back at stage 0, the same situation is refused again.
    ok(
        &app,
        Method::POST,
        &path(&id, "/rollback"),
        SAM,
        json!({"reason": "drill", "to_stage": 0}),
    )
    .await;
    ok(&app, Method::POST, &path(&id, "/resume"), SAM, json!({})).await;
    record(&app, &id, BOT, GOOD).await;
    let rid = request_advance(&app, &id).await;
    full_quorum(&app, &id, &rid).await;
    let why = advance_refused(&app, &id, &rid, "R4").await;
    assert!(why.contains("soak"), "{why}");
}

// R9 -----------------------------------------------------------------------------------

async fn r9_freeze(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running(&app).await;
    soaked(&app, &id).await;
    let rid = request_advance(&app, &id).await;
    full_quorum(&app, &id, &rid).await;

    let freeze = json!({
        "starts_at": now(&app),
        "ends_at": rfc3339(app.clock.now() + Duration::days(2)),
        "reason": "end-of-quarter freeze",
    });
    // Only governance admins of the team declare freezes.
    app.refused(
        Method::POST,
        "/v1/policies/web/freezes",
        Some(&ALICE.token(&app)),
        Some(&freeze),
        403,
        Some("permission"),
    )
    .await;
    let r = ok(
        &app,
        Method::POST,
        "/v1/policies/web/freezes",
        GINA,
        freeze.clone(),
    )
    .await;
    assert_eq!(r.status.as_u16(), 201);
    let fid = r.body["freeze_id"].as_str().unwrap().to_owned();

    let why = advance_refused(&app, &id, &rid, "R9").await;
    assert!(why.contains("end-of-quarter freeze"), "{why}");

    // Lifting it (an event) lets the advance through.
    let r = app
        .request(
            Method::DELETE,
            &format!("/v1/policies/web/freezes/{fid}"),
            Some(&GINA.token(&app)),
            None,
            &[],
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body["events"], json!(["FreezeLifted"]));
    try_advance(&app, &id, &rid).await.assert_status(200);

    // A freeze never blocks a rollback.
    ok(&app, Method::POST, "/v1/policies/web/freezes", GREG, freeze).await;
    soaked(&app, &id).await;
    let rid = request_advance(&app, &id).await;
    for who in [BOB, GINA] {
        approve(&app, &id, &rid, who).await;
    }
    advance_refused(&app, &id, &rid, "R9").await;
    let r = ok(
        &app,
        Method::POST,
        &path(&id, "/rollback"),
        SAM,
        json!({"reason": "latency regression", "to_stage": 0}),
    )
    .await;
    assert_eq!(r.body["events"], json!(["RolledBack"]));
    assert_eq!(rollout(&app, &id).await["status"], "rolled_back");
}

// R10 ----------------------------------------------------------------------------------

async fn r10_read_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running(&app).await;
    for who in [AUDREY, VIC] {
        let t = who.token(&app);
        app.refused(
            Method::POST,
            "/v1/rollouts",
            Some(&t),
            Some(&create_body()),
            403,
            Some("R10"),
        )
        .await;
        app.refused(
            Method::POST,
            &path(&id, "/pause"),
            Some(&t),
            Some(&json!({"reason": "looks odd"})),
            403,
            Some("R10"),
        )
        .await;
        app.refused(
            Method::POST,
            &path(&id, "/rollback"),
            Some(&t),
            Some(&json!({"reason": "looks odd"})),
            403,
            Some("R10"),
        )
        .await;
        app.refused(
            Method::POST,
            &path(&id, "/timeline/annotations"),
            Some(&t),
            Some(&json!({"text": "interesting"})),
            403,
            Some("R10"),
        )
        .await;
        app.refused(
            Method::PUT,
            "/v1/policies/web",
            Some(&t),
            Some(&json!({"approval_validity_seconds": 600})),
            403,
            Some("R10"),
        )
        .await;
        // Reading is what they are for.
        app.get(&path(&id, ""), &t).await.assert_status(200);
        app.get(&path(&id, "/events"), &t).await.assert_status(200);
    }
}

// R11 ----------------------------------------------------------------------------------

async fn r11_team_scope(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running(&app).await;
    let otto = OTTO.token(&app);
    let unknown = uuid::Uuid::new_v4().to_string();

    // Reads of another team's rollout answer exactly as for a rollout that does not exist.
    for rest in ["", "/events"] {
        let theirs = app.get(&path(&id, rest), &otto).await;
        theirs.assert_problem(404, Some("R11"));
        let none = app.get(&path(&unknown, rest), &otto).await;
        none.assert_problem(404, Some("R11"));
        for member in ["type", "title", "detail", "status", "rule"] {
            assert_eq!(theirs.body[member], none.body[member], "{member}");
        }
    }
    // Writes too, whatever roles the token holds.
    let writes: [(Method, &str, Value); 4] = [
        (Method::POST, "/pause", json!({"reason": "mine now"})),
        (Method::POST, "/rollback", json!({"reason": "mine now"})),
        (Method::POST, "/advance-requests", json!({})),
        (
            Method::POST,
            "/notes",
            json!({"audience": "internal", "text": "hi"}),
        ),
    ];
    for (method, rest, body) in writes {
        app.refused(
            method,
            &path(&id, rest),
            Some(&otto),
            Some(&body),
            404,
            Some("R11"),
        )
        .await;
    }
    // Creating a rollout or changing a policy for another team.
    app.refused(
        Method::POST,
        "/v1/rollouts",
        Some(&otto),
        Some(&create_body()),
        404,
        Some("R11"),
    )
    .await;
    app.refused(
        Method::PUT,
        "/v1/policies/web",
        Some(&otto),
        Some(&json!({"approval_validity_seconds": 600})),
        404,
        Some("R11"),
    )
    .await;
    // A deviation of another team's rollout is answered as one that does not exist.
    let r = ok(
        &app,
        Method::POST,
        &path(&id, "/deviations"),
        ALICE,
        json!({
            "rules": ["R9"],
            "justification": "launch date agreed with marketing",
            "expires_at": rfc3339(app.clock.now() + Duration::days(1)),
        }),
    )
    .await;
    let did = r.body["deviation_id"].as_str().unwrap().to_owned();
    let grant = json!({"decision": "grant", "comment": "sure"});
    let theirs = app
        .refused(
            Method::POST,
            &format!("/v1/deviations/{did}/decision"),
            Some(&otto),
            Some(&grant),
            404,
            Some("R11"),
        )
        .await;
    let none = app
        .refused(
            Method::POST,
            &format!("/v1/deviations/{unknown}/decision"),
            Some(&otto),
            Some(&grant),
            404,
            Some("R11"),
        )
        .await;
    assert_eq!(theirs.body, none.body);
    // `*` covers every team.
    let wanda = app.token("wanda", &["release_manager"], &["*"]);
    app.get(&path(&id, ""), &wanda).await.assert_status(200);
    ok(
        &app,
        Method::POST,
        &path(&id, "/notes"),
        ALICE,
        json!({"audience": "external", "text": "rolling out"}),
    )
    .await;
}

// R12 ----------------------------------------------------------------------------------

async fn r12_event_metadata(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.request(
        Method::PUT,
        "/v1/policies/web",
        Some(&GINA.token(&app)),
        Some(&json!({"approval_validity_seconds": 7200})),
        &[],
    )
    .await
    .assert_status(200);
    let id = running(&app).await;
    app.advance_clock(Duration::minutes(5));

    let r = app
        .request(
            Method::POST,
            &path(&id, "/pause"),
            Some(&SAM.token(&app)),
            Some(&json!({"reason": "investigating"})),
            &[
                ("x-request-id", "req-r12-0001"),
                ("x-correlation-id", "incident-42"),
            ],
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.header("x-request-id"), Some("req-r12-0001"));
    let paused_at = app.clock.now();
    // Without a request id the server makes one up and correlates on it.
    let r = ok(&app, Method::POST, &path(&id, "/resume"), ALICE, json!({})).await;
    let generated = r.header("x-request-id").unwrap().to_owned();

    let items = app
        .get(&path(&id, "/events"), &AUDREY.token(&app))
        .await
        .body["items"]
        .clone();
    let items = items.as_array().unwrap();
    for e in items {
        let md = &e["metadata"];
        assert!(
            md["actor"]["id"].as_str().is_some_and(|s| !s.is_empty()),
            "{e}"
        );
        assert!(
            md["actor"]["roles"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
            "{e}"
        );
        assert_eq!(md["team"], "web");
        assert!(
            md["request_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{e}"
        );
        assert!(
            md["correlation_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{e}"
        );
        assert_eq!(md["policy_version"], 1, "{e}");
        assert!(e["recorded_at"].as_str().is_some(), "{e}");
    }
    let paused = &items[items.len() - 2];
    assert_eq!(paused["type"], "Paused");
    let md = &paused["metadata"];
    assert_eq!(md["actor"]["id"], "sam");
    assert_eq!(md["actor"]["roles"], json!(["sre"]));
    // The request id is the server's own; the client's is kept apart, labelled as such.
    assert_ne!(md["request_id"], "req-r12-0001");
    assert_eq!(md["client_request_id"], "req-r12-0001");
    assert_eq!(md["correlation_id"], "incident-42");
    let recorded: chrono::DateTime<chrono::Utc> =
        paused["recorded_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(recorded, paused_at);

    let resumed = &items[items.len() - 1];
    assert_eq!(resumed["type"], "Resumed");
    assert_eq!(resumed["metadata"]["actor"]["id"], "alice");
    assert_eq!(
        resumed["metadata"]["actor"]["roles"],
        json!(["release_manager"])
    );
    assert_eq!(resumed["metadata"]["request_id"], generated.as_str());
    assert_eq!(resumed["metadata"]["correlation_id"], generated.as_str());

    // The created event carries the roles its actor held at that moment.
    let created = &items[0];
    assert_eq!(created["type"], "RolloutCreated");
    assert_eq!(created["metadata"]["actor"]["id"], "alice");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(created["recorded_at"].as_str().unwrap()).unwrap(),
        rollgate_e2e::start_time()
    );
}

both_backends!(
    r1_quorum,
    r2_no_self_approval,
    r3_distinct_approvers,
    r4_advance_preconditions,
    r5_rejection_closes,
    r6_revision_invalidates_approvals,
    r6_approvals_expire,
    r7_rollback,
    r8_deviations,
    r9_freeze,
    r10_read_only,
    r11_team_scope,
    r12_event_metadata,
);
