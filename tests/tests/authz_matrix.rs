//! Who may call which write endpoint: every write endpoint × every role, plus no token and
//! a token for another team. Each cell gets a rollout in a state where the call makes
//! sense, so an allowed call succeeds (2xx and new events) and a denied one is refused with
//! its status and rule (401 unauthenticated, 403 with `R1`/`R7`/`R8`/`R10`/`permission`,
//! 404 with `R11`) and writes nothing.
//!
//! The whole matrix runs on SQLite; a subset of its rows runs on PostgreSQL as well.

use chrono::Duration;
use reqwest::Method;
use rollgate_e2e::flow::{
    approve, ok, readings, request_advance, rfc3339, sign_off, try_advance, Person, ALICE, BOB,
    GINA, SAM,
};
use rollgate_e2e::{json, Backend, TestApp};
use rollgate_store::Clock;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    ReleaseManager,
    Approver,
    Sre,
    GovernanceAdmin,
    Auditor,
    Viewer,
    Service,
    NoToken,
    OtherTeam,
}

use Who::*;

const EVERYONE: [Who; 9] = [
    ReleaseManager,
    Approver,
    Sre,
    GovernanceAdmin,
    Auditor,
    Viewer,
    Service,
    NoToken,
    OtherTeam,
];

impl Who {
    /// The caller of the cell; never one of the people who set the state up (so the
    /// release manager here is not the requester of the advance being approved).
    fn person(self) -> Option<Person> {
        let web: &'static [&'static str] = &["web"];
        let (sub, roles, teams): (&'static str, &'static [&'static str], _) = match self {
            ReleaseManager => ("m-release-manager", &["release_manager"], web),
            Approver => ("m-approver", &["approver"], web),
            Sre => ("m-sre", &["sre"], web),
            GovernanceAdmin => ("m-governance-admin", &["governance_admin"], web),
            Auditor => ("m-auditor", &["auditor"], web),
            Viewer => ("m-viewer", &["viewer"], web),
            Service => ("m-service", &["service"], web),
            NoToken => return None,
            OtherTeam => (
                "m-other-team",
                &[
                    "release_manager",
                    "approver",
                    "sre",
                    "governance_admin",
                    "service",
                ],
                &["api"],
            ),
        };
        Some(Person { sub, roles, teams })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Create,
    RevisePlan,
    SignOffReleaseItem,
    SignOffSreItem,
    Start,
    RequestAdvance,
    Approve,
    Reject,
    Withdraw,
    Advance,
    Pause,
    Resume,
    Rollback,
    Complete,
    Abort,
    Metrics,
    RequestDeviation,
    DecideDeviation,
    RecordDecision,
    AddNote,
    Annotate,
    PublishPolicy,
    DeclareFreeze,
    LiftFreeze,
    CreateBinding,
    RotateBindingSecret,
    RevokeBinding,
    RegisterWebhook,
    RemoveWebhook,
    PauseWebhook,
    ResumeWebhook,
    RotateWebhookSecret,
    RedeliverWebhook,
}

use Endpoint::*;

#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Allow,
    Deny(u16, Option<&'static str>),
}

/// The matrix itself.
fn expected(ep: Endpoint, who: Who) -> Expect {
    let allowed: &[Who] = match ep {
        Create | RevisePlan | SignOffReleaseItem | Start | RequestAdvance | Withdraw | Advance
        | Complete | Abort | AddNote => &[ReleaseManager],
        SignOffSreItem => &[Sre],
        // Stage `last` names approver and sre in its quorum rules.
        Approve | Reject => &[Approver, Sre],
        Pause | Resume | Rollback => &[ReleaseManager, Sre],
        Metrics => &[Sre, Service],
        RequestDeviation => &[ReleaseManager, Sre, Approver],
        DecideDeviation | PublishPolicy | DeclareFreeze | LiftFreeze | CreateBinding
        | RotateBindingSecret | RevokeBinding => &[GovernanceAdmin],
        RegisterWebhook | RemoveWebhook | PauseWebhook | ResumeWebhook | RotateWebhookSecret
        | RedeliverWebhook => &[GovernanceAdmin],
        RecordDecision | Annotate => &[ReleaseManager, Approver, Sre, GovernanceAdmin],
    };
    match who {
        NoToken => Expect::Deny(401, None),
        OtherTeam => Expect::Deny(404, Some("R11")),
        Auditor | Viewer => Expect::Deny(403, Some("R10")),
        _ if allowed.contains(&who) => Expect::Allow,
        _ => Expect::Deny(
            403,
            Some(match ep {
                Approve | Reject => "R1",
                Rollback => "R7",
                DecideDeviation => "R8",
                _ => "permission",
            }),
        ),
    }
}

/// Two stages without soak or criteria, and a readiness checklist with one item for the
/// release manager and one for the SRE.
fn create_body() -> Value {
    json!({
        "feature_key": "matrix-flag",
        "title": "Authorization matrix",
        "team": "web",
        "plan": {
            "owner": "alice",
            "stages": [
                {"name": "first", "audience": {"percentage": 10}, "min_soak_seconds": 0,
                 "approvals": [{"roles": ["approver"], "count": 1}]},
                {"name": "last", "audience": {"percentage": 100}, "min_soak_seconds": 0,
                 "approvals": [{"roles": ["approver"], "count": 1}, {"roles": ["sre"], "count": 1}]},
            ],
            "readiness_checklist": [
                {"key": "qa", "title": "QA done", "owner_role": "release_manager"},
                {"key": "runbook", "title": "Runbook", "owner_role": "sre"},
            ],
        },
    })
}

struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

fn post(path: String, body: Value) -> Call {
    Call {
        method: Method::POST,
        path,
        body: Some(body),
        headers: Vec::new(),
    }
}

async fn draft(app: &TestApp) -> String {
    let r = app
        .post("/v1/rollouts", &ALICE.token(app), create_body())
        .await;
    r.assert_status(201);
    r.body["rollout_id"].as_str().unwrap().to_owned()
}

async fn ready(app: &TestApp) -> String {
    let id = draft(app).await;
    sign_off(app, &id, "qa", ALICE).await;
    sign_off(app, &id, "runbook", SAM).await;
    id
}

async fn running(app: &TestApp) -> String {
    let id = ready(app).await;
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

/// Running with an open request for stage `last`, approved by its whole quorum.
async fn approved(app: &TestApp) -> (String, String) {
    let id = running(app).await;
    let rid = request_advance(app, &id).await;
    approve(app, &id, &rid, BOB).await;
    approve(app, &id, &rid, SAM).await;
    (id, rid)
}

/// Sets the state up for one cell and answers the call to make.
async fn prepare(app: &TestApp, ep: Endpoint) -> Call {
    let r = |id: &str, rest: &str| format!("/v1/rollouts/{id}{rest}");
    let reason = json!({"reason": "matrix"});
    match ep {
        Create => post("/v1/rollouts".into(), create_body()),
        RevisePlan => {
            let id = draft(app).await;
            Call {
                method: Method::PUT,
                path: r(&id, "/plan"),
                body: Some(json!({"plan": create_body()["plan"]})),
                headers: vec![("if-match", "\"1\"".to_owned())],
            }
        }
        SignOffReleaseItem => post(r(&draft(app).await, "/readiness/qa/sign-off"), json!({})),
        SignOffSreItem => post(
            r(&draft(app).await, "/readiness/runbook/sign-off"),
            json!({}),
        ),
        Start => post(r(&ready(app).await, "/start"), json!({})),
        RequestAdvance => post(r(&running(app).await, "/advance-requests"), json!({})),
        Approve | Reject => {
            let id = running(app).await;
            let rid = request_advance(app, &id).await;
            let body = if ep == Approve {
                json!({"decision": "approve", "comment": "ok"})
            } else {
                json!({"decision": "reject", "comment": "not yet"})
            };
            post(r(&id, &format!("/advance-requests/{rid}/approvals")), body)
        }
        Withdraw => {
            let id = running(app).await;
            let rid = request_advance(app, &id).await;
            post(
                r(&id, &format!("/advance-requests/{rid}/withdraw")),
                json!({}),
            )
        }
        Advance => {
            let (id, rid) = approved(app).await;
            post(r(&id, "/advance"), json!({ "request_id": rid }))
        }
        Pause => post(r(&running(app).await, "/pause"), reason),
        Resume => {
            let id = running(app).await;
            ok(app, Method::POST, &r(&id, "/pause"), SAM, reason).await;
            post(r(&id, "/resume"), json!({}))
        }
        Rollback => post(r(&running(app).await, "/rollback"), reason),
        Complete => {
            let (id, rid) = approved(app).await;
            try_advance(app, &id, &rid).await.assert_status(200);
            post(r(&id, "/complete"), json!({}))
        }
        Abort => post(r(&running(app).await, "/abort"), reason),
        Metrics => {
            let id = running(app).await;
            post(
                r(&id, "/metrics"),
                readings(app, &[("error_rate", 0.001, 100)]),
            )
        }
        RequestDeviation => post(
            r(&running(app).await, "/deviations"),
            json!({
                "rules": ["R4"],
                "justification": "matrix",
                "expires_at": rfc3339(app.clock.now() + Duration::days(1)),
            }),
        ),
        DecideDeviation => {
            let id = running(app).await;
            let d = ok(
                app,
                Method::POST,
                &r(&id, "/deviations"),
                ALICE,
                json!({
                    "rules": ["R9"],
                    "justification": "matrix",
                    "expires_at": rfc3339(app.clock.now() + Duration::days(1)),
                }),
            )
            .await;
            let did = d.body["deviation_id"].as_str().unwrap();
            post(
                format!("/v1/deviations/{did}/decision"),
                json!({"decision": "grant", "comment": "fine"}),
            )
        }
        RecordDecision => post(
            r(&running(app).await, "/decisions"),
            json!({"title": "Keep going", "rationale": "metrics are fine", "outcome": "continue"}),
        ),
        AddNote => post(
            r(&running(app).await, "/notes"),
            json!({"audience": "internal", "text": "first stage is live"}),
        ),
        Annotate => post(
            r(&running(app).await, "/timeline/annotations"),
            json!({"text": "note for the post-mortem", "about": "T+0"}),
        ),
        PublishPolicy => Call {
            method: Method::PUT,
            path: "/v1/policies/web".into(),
            body: Some(json!({"approval_validity_seconds": 3600})),
            headers: Vec::new(),
        },
        DeclareFreeze => post(
            "/v1/policies/web/freezes".into(),
            json!({
                "starts_at": rfc3339(app.clock.now()),
                "ends_at": rfc3339(app.clock.now() + Duration::hours(4)),
                "reason": "matrix",
            }),
        ),
        LiftFreeze => {
            let f = ok(
                app,
                Method::POST,
                "/v1/policies/web/freezes",
                GINA,
                json!({
                    "starts_at": rfc3339(app.clock.now() + Duration::days(1)),
                    "ends_at": rfc3339(app.clock.now() + Duration::days(2)),
                    "reason": "matrix",
                }),
            )
            .await;
            let fid = f.body["freeze_id"].as_str().unwrap();
            Call {
                method: Method::DELETE,
                path: format!("/v1/policies/web/freezes/{fid}"),
                body: None,
                headers: Vec::new(),
            }
        }
        CreateBinding => post(
            "/v1/bindings".into(),
            json!({"rollout_id": running(app).await, "target": {"kind": "flag_key", "key": "matrix-flag"}}),
        ),
        RotateBindingSecret | RevokeBinding => {
            let b = ok(
                app,
                Method::POST,
                "/v1/bindings",
                GINA,
                json!({"rollout_id": running(app).await, "target": {"kind": "flag_key", "key": "matrix-flag"}}),
            )
            .await;
            let bid = b.body["binding_id"].as_str().unwrap();
            if ep == RotateBindingSecret {
                post(format!("/v1/bindings/{bid}/rotate-secret"), json!({}))
            } else {
                post(format!("/v1/bindings/{bid}/revoke"), reason)
            }
        }
        RegisterWebhook => post("/v1/webhooks".into(), webhook_body()),
        RemoveWebhook | PauseWebhook | ResumeWebhook | RotateWebhookSecret | RedeliverWebhook => {
            let w = ok(app, Method::POST, "/v1/webhooks", GINA, webhook_body()).await;
            let wid = w.body["id"].as_str().unwrap().to_owned();
            match ep {
                RemoveWebhook => Call {
                    method: Method::DELETE,
                    path: format!("/v1/webhooks/{wid}"),
                    body: None,
                    headers: Vec::new(),
                },
                PauseWebhook => post(format!("/v1/webhooks/{wid}/pause"), json!({})),
                ResumeWebhook => {
                    let path = format!("/v1/webhooks/{wid}/pause");
                    ok(app, Method::POST, &path, GINA, json!({})).await;
                    post(format!("/v1/webhooks/{wid}/resume"), json!({}))
                }
                RotateWebhookSecret => post(format!("/v1/webhooks/{wid}/rotate-secret"), json!({})),
                _ => post(
                    format!("/v1/webhooks/{wid}/redeliver"),
                    json!({"after_position": 0}),
                ),
            }
        }
    }
}

/// A webhook of team `web` (the receiver is never reached: port 9 is discard).
fn webhook_body() -> Value {
    json!({
        "team": "web",
        "url": "http://127.0.0.1:9/hook",
        "event_types": ["dev.rollgate.rollout.created"],
    })
}

/// One row of the matrix: the endpoint called by everyone, each on fresh state.
async fn row(backend: Backend, ep: Endpoint) {
    let app = TestApp::spawn(backend).await;
    for who in EVERYONE {
        let call = prepare(&app, ep).await;
        let token = who.person().map(|p| p.token(&app));
        let headers: Vec<(&str, &str)> =
            call.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let before = app.event_count().await;
        let reply = app
            .request(
                call.method.clone(),
                &call.path,
                token.as_deref(),
                call.body.as_ref(),
                &headers,
            )
            .await;
        let after = app.event_count().await;
        let cell = format!("{ep:?} as {who:?}: {} {}", reply.status, reply.body);
        match expected(ep, who) {
            Expect::Allow => {
                assert!(reply.status.is_success(), "{cell}");
                assert!(after > before, "{cell}: no event written");
            }
            Expect::Deny(status, rule) => {
                assert_eq!(reply.status.as_u16(), status, "{cell}");
                reply.assert_problem(status, rule);
                assert_eq!(after, before, "{cell}: a refusal wrote events");
            }
        }
    }
}

/// The matrix is total: every cell has an answer, and every endpoint has someone allowed.
#[test]
fn matrix_is_sane() {
    let all = [
        Create,
        RevisePlan,
        SignOffReleaseItem,
        SignOffSreItem,
        Start,
        RequestAdvance,
        Approve,
        Reject,
        Withdraw,
        Advance,
        Pause,
        Resume,
        Rollback,
        Complete,
        Abort,
        Metrics,
        RequestDeviation,
        DecideDeviation,
        RecordDecision,
        AddNote,
        Annotate,
        PublishPolicy,
        DeclareFreeze,
        LiftFreeze,
        CreateBinding,
        RotateBindingSecret,
        RevokeBinding,
        RegisterWebhook,
        RemoveWebhook,
        PauseWebhook,
        ResumeWebhook,
        RotateWebhookSecret,
        RedeliverWebhook,
    ];
    // Every write route of the server is a row (PUT plan, POST writes, policy routes),
    // except the tool routes, which authenticate with a binding secret instead of a token
    // (tests/tests/gates.rs).
    let writes = rollgate_server::app::ROUTES
        .iter()
        .filter(|(m, p)| *m != "get" && !p.starts_with("/v1/integrations/"))
        .count();
    // Sign-off and approvals appear twice (two item owners; approve and reject).
    assert_eq!(all.len(), writes + 2);
    for ep in all {
        assert!(EVERYONE.iter().any(|w| expected(ep, *w) == Expect::Allow));
        for w in [Auditor, Viewer] {
            assert_eq!(expected(ep, w), Expect::Deny(403, Some("R10")));
        }
    }
}

/// R11 whatever comes with the request: every per-rollout route (and the deviation decision)
/// answers another team's id exactly as an unknown id (404, same body), also with If-Match,
/// an Idempotency-Key, an unusable Idempotency-Key, a malformed body or another media type.
/// Every (route, variant) is checked and the failures are reported together.
async fn other_team_ids_answer_as_unknown(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (id, rid) = approved(&app).await;
    let d = ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/deviations"),
        ALICE,
        json!({
            "rules": ["R9"],
            "justification": "matrix",
            "expires_at": rfc3339(app.clock.now() + Duration::days(1)),
        }),
    )
    .await;
    let did = d.body["deviation_id"].as_str().unwrap().to_owned();
    let version = app
        .get(&format!("/v1/rollouts/{id}"), &ALICE.token(&app))
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    let unknown = uuid::Uuid::new_v4().to_string();
    let other = OtherTeam.person().unwrap().token(&app);
    let long_key = "k".repeat(300);
    type Variant<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a str>, &'a [u8]);
    let variants: Vec<Variant> = vec![
        ("plain", vec![], Some("application/json"), b"{}"),
        (
            "stale If-Match",
            vec![("if-match", "\"1\"")],
            Some("application/json"),
            b"{}",
        ),
        (
            "current If-Match",
            vec![("if-match", version.as_str())],
            Some("application/json"),
            b"{}",
        ),
        (
            "If-Match garbage",
            vec![("if-match", "nope")],
            Some("application/json"),
            b"{}",
        ),
        (
            "Idempotency-Key",
            vec![("idempotency-key", "k-1")],
            Some("application/json"),
            b"{}",
        ),
        (
            "long Idempotency-Key",
            vec![("idempotency-key", long_key.as_str())],
            Some("application/json"),
            b"{}",
        ),
        (
            "malformed body",
            vec![],
            Some("application/json"),
            b"{\"reason\": ",
        ),
        (
            "wrong field",
            vec![],
            Some("application/json"),
            b"{\"nope\": 1}",
        ),
        ("text body", vec![], Some("text/plain"), b"hello"),
    ];
    let before = app.event_count().await;
    let mut failures = Vec::new();
    let mut checked = 0;
    for (method, pattern) in rollgate_server::app::ROUTES {
        let per_rollout =
            pattern.starts_with("/v1/rollouts/{id}") || pattern.starts_with("/v1/deviations/{did}");
        if !per_rollout {
            continue;
        }
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let fill = |rollout: &str, deviation: &str| {
            pattern
                .replace("{id}", rollout)
                .replace("{rid}", &rid)
                .replace("{item}", "qa")
                .replace("{did}", deviation)
        };
        for (name, headers, content_type, body) in &variants {
            let (theirs_path, unknown_path) = (fill(&id, &did), fill(&unknown, &unknown));
            let mut answers = Vec::new();
            for path in [&theirs_path, &unknown_path] {
                let reply = app
                    .request_bytes(
                        method.clone(),
                        path,
                        Some(&other),
                        *content_type,
                        body.to_vec(),
                        headers,
                    )
                    .await;
                answers.push(reply);
            }
            let (theirs, none) = (&answers[0], &answers[1]);
            checked += 1;
            let cell = format!(
                "{method} {pattern} with {name}: other team {} {} / unknown {} {}",
                theirs.status, theirs.body, none.status, none.body
            );
            if theirs.status.as_u16() != 404
                || none.status.as_u16() != 404
                || theirs.body != none.body
                || theirs.header("content-type") != Some("application/problem+json")
                || theirs.header("etag").is_some()
            {
                failures.push(cell);
            }
        }
    }
    assert!(checked > 100, "only {checked} cells");
    assert_eq!(
        app.event_count().await,
        before,
        "a refused request wrote events"
    );
    assert!(
        failures.is_empty(),
        "{} of {checked} cells leak:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_team_ids_answer_as_unknown_sqlite() {
    other_team_ids_answer_as_unknown(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_team_ids_answer_as_unknown_postgres() {
    other_team_ids_answer_as_unknown(Backend::Postgres).await;
}

macro_rules! rows {
    ($backend:ident: $($name:ident => $ep:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                row(Backend::$backend, $ep).await;
            }
        )*
    };
}

mod sqlite {
    use super::*;

    rows! { Sqlite:
        create => Create,
        revise_plan => RevisePlan,
        sign_off_release_item => SignOffReleaseItem,
        sign_off_sre_item => SignOffSreItem,
        start => Start,
        request_advance => RequestAdvance,
        approve => Approve,
        reject => Reject,
        withdraw => Withdraw,
        advance => Advance,
        pause => Pause,
        resume => Resume,
        rollback => Rollback,
        complete => Complete,
        abort => Abort,
        metrics => Metrics,
        request_deviation => RequestDeviation,
        decide_deviation => DecideDeviation,
        record_decision => RecordDecision,
        add_note => AddNote,
        annotate => Annotate,
        publish_policy => PublishPolicy,
        declare_freeze => DeclareFreeze,
        lift_freeze => LiftFreeze,
        create_binding => CreateBinding,
        rotate_binding_secret => RotateBindingSecret,
        revoke_binding => RevokeBinding,
        register_webhook => RegisterWebhook,
        remove_webhook => RemoveWebhook,
        pause_webhook => PauseWebhook,
        resume_webhook => ResumeWebhook,
        rotate_webhook_secret => RotateWebhookSecret,
        redeliver_webhook => RedeliverWebhook,
    }
}

mod postgres {
    use super::*;

    rows! { Postgres:
        create => Create,
        approve => Approve,
        rollback => Rollback,
        metrics => Metrics,
        decide_deviation => DecideDeviation,
        publish_policy => PublishPolicy,
    }
}
