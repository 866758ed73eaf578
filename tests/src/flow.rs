//! The people of the end-to-end tests and the steps that drive a rollout over HTTP.
//!
//! Tokens are minted on demand ([`Person::token`]) because the manual clock moves by days
//! in these tests and a token lives for an hour.

use chrono::SecondsFormat;
use reqwest::Method;
use rollgate_store::Clock;
use serde_json::{json, Value};

use crate::{example_create_body, Reply, TestApp};

/// A principal: the JWT `sub`, roles and teams.
#[derive(Clone, Copy, Debug)]
pub struct Person {
    pub sub: &'static str,
    pub roles: &'static [&'static str],
    pub teams: &'static [&'static str],
}

impl Person {
    /// A token valid for an hour from the clock's now.
    pub fn token(&self, app: &TestApp) -> String {
        app.token(self.sub, self.roles, self.teams)
    }
}

const WEB: &[&str] = &["web"];

/// Release manager of team web; writes the plans and requests the advances.
pub const ALICE: Person = Person {
    sub: "alice",
    roles: &["release_manager"],
    teams: WEB,
};
/// Approver of team web.
pub const BOB: Person = Person {
    sub: "bob",
    roles: &["approver"],
    teams: WEB,
};
/// A second approver of team web.
pub const CAROL: Person = Person {
    sub: "carol",
    roles: &["approver"],
    teams: WEB,
};
/// SRE of team web.
pub const SAM: Person = Person {
    sub: "sam",
    roles: &["sre"],
    teams: WEB,
};
/// Governance admin of team web.
pub const GINA: Person = Person {
    sub: "gina",
    roles: &["governance_admin"],
    teams: WEB,
};
/// A second governance admin of team web.
pub const GREG: Person = Person {
    sub: "greg",
    roles: &["governance_admin"],
    teams: WEB,
};
/// Auditor of team web.
pub const AUDREY: Person = Person {
    sub: "audrey",
    roles: &["auditor"],
    teams: WEB,
};
/// Viewer of team web.
pub const VIC: Person = Person {
    sub: "vic",
    roles: &["viewer"],
    teams: WEB,
};
/// Automation of team web (pushes metric readings).
pub const BOT: Person = Person {
    sub: "metrics-bot",
    roles: &["service"],
    teams: WEB,
};
/// Holds every writing role, but for team api only.
pub const OTTO: Person = Person {
    sub: "otto",
    roles: &[
        "release_manager",
        "approver",
        "sre",
        "governance_admin",
        "service",
    ],
    teams: &["api"],
};

/// The clock's now in RFC 3339 (UTC, seconds).
pub fn now(app: &TestApp) -> String {
    rfc3339(app.clock.now())
}

pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The body of `POST .../metrics`: each reading observed now.
pub fn readings(app: &TestApp, values: &[(&str, f64, u64)]) -> Value {
    let observed_at = now(app);
    json!({
        "readings": values
            .iter()
            .map(|(metric, value, samples)| json!({
                "metric": metric,
                "value": value,
                "samples": samples,
                "observed_at": observed_at,
            }))
            .collect::<Vec<_>>()
    })
}

/// Readings that meet every success criterion of the example plan and breach none of its
/// rollback criteria, with enough samples for every stage.
pub const HEALTHY: &[(&str, f64, u64)] = &[
    ("error_rate", 0.003, 20_000),
    ("p95_latency_ms", 300.0, 20_000),
];

/// The example plan's minimum soak per stage (seconds).
pub const EXAMPLE_SOAK: [i64; 3] = [86_400, 172_800, 0];

/// Who approves the advance *into* each stage of the example plan (its quorum rules).
pub fn example_quorum(target: usize) -> Vec<Person> {
    match target {
        0 => vec![BOB],
        1 => vec![BOB, CAROL, SAM],
        _ => vec![BOB, CAROL, GINA],
    }
}

/// `POST /v1/rollouts` as ALICE; answers the new rollout's id.
pub async fn create(app: &TestApp, body: Value) -> String {
    let r = app.post("/v1/rollouts", &ALICE.token(app), body).await;
    r.assert_status(201);
    r.body["rollout_id"]
        .as_str()
        .expect("rollout_id in the answer")
        .to_owned()
}

/// The example rollout, created and with every readiness item signed off by its owner role.
pub async fn ready_example(app: &TestApp) -> String {
    let id = create(app, example_create_body()).await;
    for (item, who) in [
        ("qa-signoff", ALICE),
        ("runbook", SAM),
        ("support-faq", ALICE),
    ] {
        sign_off(app, &id, item, who).await;
    }
    id
}

/// The example rollout, running at stage 0.
pub async fn running_example(app: &TestApp) -> String {
    let id = ready_example(app).await;
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

pub async fn sign_off(app: &TestApp, id: &str, item: &str, who: Person) -> Reply {
    ok(
        app,
        Method::POST,
        &format!("/v1/rollouts/{id}/readiness/{item}/sign-off"),
        who,
        json!({}),
    )
    .await
}

/// Sends a request that must succeed (2xx); answers the reply.
pub async fn ok(app: &TestApp, method: Method, path: &str, who: Person, body: Value) -> Reply {
    let r = app
        .request(method, path, Some(&who.token(app)), Some(&body), &[])
        .await;
    assert!(
        r.status.is_success(),
        "{path} as {}: {} {}",
        who.sub,
        r.status,
        r.body
    );
    r
}

/// `POST .../advance-requests` as ALICE; answers the request id.
pub async fn request_advance(app: &TestApp, id: &str) -> String {
    let r = ok(
        app,
        Method::POST,
        &format!("/v1/rollouts/{id}/advance-requests"),
        ALICE,
        json!({}),
    )
    .await;
    assert_eq!(r.status.as_u16(), 201);
    r.body["request_id"]
        .as_str()
        .expect("request_id")
        .to_owned()
}

pub async fn approve(app: &TestApp, id: &str, rid: &str, who: Person) -> Reply {
    ok(
        app,
        Method::POST,
        &format!("/v1/rollouts/{id}/advance-requests/{rid}/approvals"),
        who,
        json!({"decision": "approve", "comment": format!("fine by {}", who.sub)}),
    )
    .await
}

pub async fn record(app: &TestApp, id: &str, who: Person, values: &[(&str, f64, u64)]) -> Reply {
    ok(
        app,
        Method::POST,
        &format!("/v1/rollouts/{id}/metrics"),
        who,
        readings(app, values),
    )
    .await
}

/// `POST .../advance` as ALICE, whatever the answer.
pub async fn try_advance(app: &TestApp, id: &str, rid: &str) -> Reply {
    app.post(
        &format!("/v1/rollouts/{id}/advance"),
        &ALICE.token(app),
        json!({ "request_id": rid }),
    )
    .await
}

/// `GET /v1/rollouts/{id}` as ALICE (must answer 200).
pub async fn rollout(app: &TestApp, id: &str) -> Value {
    let r = app
        .get(&format!("/v1/rollouts/{id}"), &ALICE.token(app))
        .await;
    r.assert_status(200);
    r.body
}

/// Moves a running example rollout from stage `from` to `from + 1`: healthy readings,
/// the soak, a request approved by the target stage's quorum, the advance.
pub async fn advance_example(app: &TestApp, id: &str, from: usize) -> Reply {
    record(app, id, BOT, HEALTHY).await;
    app.advance_clock(chrono::Duration::seconds(EXAMPLE_SOAK[from]));
    let rid = request_advance(app, id).await;
    for who in example_quorum(from + 1) {
        approve(app, id, &rid, who).await;
    }
    let r = try_advance(app, id, &rid).await;
    r.assert_status(200);
    r
}
