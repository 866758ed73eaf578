//! Bad requests of every kind answered as `application/problem+json` with the right status
//! (400, 401, 403, 404, 405, 409, 412, 413, 415, 422, 428), none of them writing an event;
//! and `Idempotency-Key` replays. Every section is a table of rows ([`Case`]): what is sent,
//! and the answer expected (status, problem `type`, fields named, events written). Every row
//! is sent and checked, and the failures are reported together at the end ([`check`]), so
//! one failure does not hide the others. Rows run in order: a row may rely on the ones
//! before it (a replay, a version that moved).

use std::collections::HashMap;

use chrono::Duration;
use reqwest::Method;
use rollgate_e2e::flow::{
    readings, request_advance, running_example, sign_off, Person, ALICE, AUDREY, BOB, SAM,
};
use rollgate_e2e::{both_backends, example_create_body, json, Backend, Reply, TestApp};
use serde_json::Value;

fn problem_type(r: &Reply) -> &str {
    r.body["type"].as_str().unwrap_or_default()
}

fn fields(r: &Reply) -> Vec<String> {
    r.body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The fields a validation problem must name (`errors[].field`).
enum Fields {
    /// Exactly these, in this order.
    Exactly(&'static [&'static str]),
    /// Each of these among others.
    Include(&'static [&'static str]),
    /// One field containing this text.
    Containing(&'static str),
    /// One field starting with this path.
    Under(&'static str),
    /// The first field starts with this path.
    FirstUnder(&'static str),
}

impl Fields {
    fn holds(&self, named: &[String]) -> bool {
        match self {
            Fields::Exactly(want) => named == *want,
            Fields::Include(want) => want.iter().all(|w| named.iter().any(|f| f == w)),
            Fields::Containing(part) => named.iter().any(|f| f.contains(part)),
            Fields::Under(prefix) => named.iter().any(|f| f.starts_with(prefix)),
            Fields::FirstUnder(prefix) => named.first().is_some_and(|f| f.starts_with(prefix)),
        }
    }
}

/// One row of a table: what is sent and the answer expected. A row expecting 400 or more
/// must be problem+json; every row writes `writes` events (none unless told).
struct Case {
    name: String,
    method: Method,
    path: String,
    token: Option<String>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    advance_clock: Option<Duration>,
    status: u16,
    problem: Option<&'static str>,
    rule: Option<&'static str>,
    allow: Option<&'static str>,
    fields: Option<Fields>,
    message: Option<&'static str>,
    body_has: Vec<(&'static str, Value)>,
    header_is: Vec<(&'static str, &'static str)>,
    present: Vec<&'static str>,
    same_as: Option<&'static str>,
    writes: u64,
}

fn case(name: impl Into<String>, method: Method, path: impl Into<String>) -> Case {
    Case {
        name: name.into(),
        method,
        path: path.into(),
        token: None,
        content_type: None,
        body: Vec::new(),
        headers: Vec::new(),
        advance_clock: None,
        status: 0,
        problem: None,
        rule: None,
        allow: None,
        fields: None,
        message: None,
        body_has: Vec::new(),
        header_is: Vec::new(),
        present: Vec::new(),
        same_as: None,
        writes: 0,
    }
}

impl Case {
    fn token(mut self, t: &str) -> Self {
        self.token = Some(t.to_owned());
        self
    }
    fn json(self, v: Value) -> Self {
        self.raw("application/json", serde_json::to_vec(&v).unwrap())
    }
    fn raw(mut self, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = Some(content_type);
        self.body = body.into();
        self
    }
    /// A body sent without any Content-Type.
    fn untyped(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = None;
        self.body = body.into();
        self
    }
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    /// Moves the server's clock by this much just before the row is sent.
    fn after(mut self, by: Duration) -> Self {
        self.advance_clock = Some(by);
        self
    }
    /// Refused with this status and problem type.
    fn expect(mut self, status: u16, problem: &'static str) -> Self {
        self.status = status;
        self.problem = Some(problem);
        self
    }
    /// This status (a success, or a refusal of any problem type).
    fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    fn rule(mut self, rule: &'static str) -> Self {
        self.rule = Some(rule);
        self
    }
    fn allow(mut self, allow: &'static str) -> Self {
        self.allow = Some(allow);
        self
    }
    fn fields(mut self, fields: Fields) -> Self {
        self.fields = Some(fields);
        self
    }
    /// The first error's message mentions this.
    fn message(mut self, part: &'static str) -> Self {
        self.message = Some(part);
        self
    }
    /// The body has this member with this value.
    fn with(mut self, member: &'static str, value: Value) -> Self {
        self.body_has.push((member, value));
        self
    }
    /// The answer has this header with this value.
    fn header_is(mut self, name: &'static str, value: &'static str) -> Self {
        self.header_is.push((name, value));
        self
    }
    /// The answer has this header.
    fn has(mut self, name: &'static str) -> Self {
        self.present.push(name);
        self
    }
    /// The same answer (status, body, ETag, Location) as the earlier row of this name.
    fn same_as(mut self, row: &'static str) -> Self {
        self.same_as = Some(row);
        self
    }
    fn writes(mut self, events: u64) -> Self {
        self.writes = events;
        self
    }
}

/// The rows of one test: [`Table::run`] sends and checks them, keeping each answer by
/// row name; [`Table::finish`] reports every failure at once.
struct Table<'a> {
    app: &'a TestApp,
    rows: usize,
    failures: Vec<String>,
    replies: HashMap<String, Reply>,
}

impl<'a> Table<'a> {
    fn new(app: &'a TestApp) -> Self {
        Table {
            app,
            rows: 0,
            failures: Vec::new(),
            replies: HashMap::new(),
        }
    }

    /// The answer to an earlier row.
    fn reply(&self, row: &str) -> Option<&Reply> {
        self.replies.get(row)
    }

    /// Records a failure found outside a row's own checks.
    fn fail(&mut self, what: String) {
        self.failures.push(what);
    }

    async fn run(&mut self, cases: Vec<Case>) {
        for c in cases {
            self.rows += 1;
            if let Some(by) = c.advance_clock {
                self.app.advance_clock(by);
            }
            let before = self.app.event_count().await;
            let headers: Vec<(&str, &str)> =
                c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let r = self
                .app
                .request_bytes(
                    c.method.clone(),
                    &c.path,
                    c.token.as_deref(),
                    c.content_type,
                    c.body.clone(),
                    &headers,
                )
                .await;
            let written = self.app.event_count().await - before;
            let wrong = self.wrong(&c, &r, written);
            if !wrong.is_empty() {
                self.failures.push(format!(
                    "{} ({} {}): {} — {}",
                    c.name,
                    c.method,
                    c.path,
                    wrong.join(", "),
                    r.body
                ));
            }
            self.replies.insert(c.name, r);
        }
    }

    /// What is wrong with this answer to this row (nothing when it is as expected).
    fn wrong(&self, c: &Case, r: &Reply, written: u64) -> Vec<String> {
        let mut wrong = Vec::new();
        if r.status.as_u16() != c.status {
            wrong.push(format!("status {} (expected {})", r.status, c.status));
        }
        if c.status >= 400 {
            if r.header("content-type") != Some("application/problem+json") {
                wrong.push(format!("content type {:?}", r.header("content-type")));
            }
            if problem_type(r).is_empty() {
                wrong.push("no problem type".to_owned());
            }
            if r.body["status"].as_u64() != Some(u64::from(c.status)) {
                wrong.push(format!("problem status {}", r.body["status"]));
            }
        }
        if let Some(p) = c.problem {
            if problem_type(r) != format!("urn:rollgate:problem:{p}") {
                wrong.push(format!("type {}", problem_type(r)));
            }
        }
        if c.rule.is_some() && r.body["rule"].as_str() != c.rule {
            wrong.push(format!("rule {} (expected {:?})", r.body["rule"], c.rule));
        }
        if c.allow.is_some() && r.header("allow") != c.allow {
            let allow = r.header("allow");
            wrong.push(format!("Allow {allow:?} (expected {:?})", c.allow));
        }
        if let Some(f) = &c.fields {
            if !f.holds(&fields(r)) {
                wrong.push(format!("fields {:?}", fields(r)));
            }
        }
        if let Some(part) = c.message {
            let message = r.body["errors"][0]["message"].as_str().unwrap_or_default();
            if !message.contains(part) {
                wrong.push(format!(
                    "first message {message:?} (expected {part:?} in it)"
                ));
            }
        }
        for (member, value) in &c.body_has {
            if r.body[member] != *value {
                wrong.push(format!("{member} {} (expected {value})", r.body[member]));
            }
        }
        for (name, value) in &c.header_is {
            if r.header(name) != Some(value) {
                wrong.push(format!("{name} {:?} (expected {value})", r.header(name)));
            }
        }
        for name in &c.present {
            if r.header(name).is_none() {
                wrong.push(format!("no {name}"));
            }
        }
        if let Some(row) = c.same_as {
            match self.reply(row) {
                None => wrong.push(format!("no earlier row {row:?}")),
                Some(first) => {
                    if (r.status, &r.body) != (first.status, &first.body) {
                        wrong.push(format!("answer differs from {row:?}: {}", first.body));
                    }
                    for h in ["etag", "location"] {
                        if r.header(h) != first.header(h) {
                            wrong.push(format!("{h} differs from {row:?}"));
                        }
                    }
                }
            }
        }
        if written != c.writes {
            wrong.push(format!("{written} events written (expected {})", c.writes));
        }
        wrong
    }

    fn finish(self) {
        assert!(
            self.failures.is_empty(),
            "{} failures in {} rows:\n{}",
            self.failures.len(),
            self.rows,
            self.failures.join("\n")
        );
    }
}

/// Runs one table and reports its failures.
async fn check(app: &TestApp, cases: Vec<Case>) {
    let mut table = Table::new(app);
    table.run(cases).await;
    table.finish();
}

async fn draft(app: &TestApp) -> String {
    let r = app
        .post("/v1/rollouts", &ALICE.token(app), example_create_body())
        .await;
    r.assert_status(201);
    r.body["rollout_id"].as_str().unwrap().to_owned()
}

// 400 ----------------------------------------------------------------------------------

async fn malformed_json(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let t = ALICE.token(&app);
    let id = draft(&app).await;
    // A complete, valid document followed by more bytes is not one JSON document.
    let mut trailing = serde_json::to_vec(&example_create_body()).unwrap();
    trailing.extend_from_slice(b" {}");
    let bodies: [(&str, Vec<u8>); 5] = [
        ("truncated", b"{\"feature_key\": \"x\",".to_vec()),
        ("missing colon", b"{\"feature_key\" \"x\"}".to_vec()),
        ("not json", b"not json at all".to_vec()),
        (
            "trailing garbage",
            b"{\"title\": \"trailing\"} garbage".to_vec(),
        ),
        ("trailing document", trailing),
    ];
    let mut cases: Vec<Case> = bodies
        .into_iter()
        .map(|(name, body)| {
            case(name, Method::POST, "/v1/rollouts")
                .token(&t)
                .raw("application/json", body)
                .expect(400, "malformed-request")
        })
        .collect();
    // Commands without input accept an empty body, not a broken one.
    let sign_off = format!("/v1/rollouts/{id}/readiness/qa-signoff/sign-off");
    cases.extend([
        case("broken body, no-input command", Method::POST, &sign_off)
            .token(&t)
            .raw("application/json", b"{".to_vec())
            .expect(400, "malformed-request"),
        case("empty body, no-input command", Method::POST, &sign_off)
            .token(&t)
            .status(200)
            .writes(1),
    ]);
    check(&app, cases).await;
}

// 401 ----------------------------------------------------------------------------------

fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned token (`alg: none`) with otherwise perfect claims.
fn alg_none_token(app: &TestApp) -> String {
    let now = rollgate_store::Clock::now(&*app.clock).timestamp();
    let header = json!({"alg": "none", "typ": "JWT"});
    let claims = json!({
        "iss": "rollgate", "aud": "rollgate", "sub": "mallory",
        "iat": now, "nbf": now, "exp": now + 3600,
        "roles": ["release_manager"], "teams": ["*"],
    });
    format!(
        "{}.{}.",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

async fn unauthenticated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = draft(&app).await;
    let (rm, web) = (["release_manager"], ["web"]);
    let now = rollgate_store::Clock::now(&*app.clock).timestamp();
    let minted = |change: &dyn Fn(&mut rollgate_e2e::MintRequest)| {
        let mut request = app.mint_request("alice", &rm, &web);
        change(&mut request);
        app.mint(request)
    };

    let other_dir = tempfile::tempdir().unwrap();
    let other_key = rollgate_auth::DevKeys::load_or_create(other_dir.path())
        .unwrap()
        .mint(app.mint_request("alice", &rm, &web))
        .unwrap();
    let valid = ALICE.token(&app);
    let (head, rest) = valid.split_once('.').unwrap();
    let (_, sig) = rest.rsplit_once('.').unwrap();
    let forged_claims = b64url(
        json!({"iss": "rollgate", "aud": "rollgate", "sub": "alice", "iat": now, "nbf": now,
               "exp": now + 3600, "roles": ["governance_admin"], "teams": ["*"]})
        .to_string()
        .as_bytes(),
    );
    let bearer = |t: String| Some(format!("Bearer {t}"));

    // The Authorization header sent (None: no header).
    let tokens: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("garbage", bearer("not-a-token".into())),
        ("empty bearer", Some("Bearer ".into())),
        ("basic scheme", Some("Basic YWxpY2U6c2VjcmV0".into())),
        ("expired", bearer(minted(&|r| r.now = now - 7200))),
        ("not yet valid", bearer(minted(&|r| r.now = now + 600))),
        (
            "wrong audience",
            bearer(minted(&|r| r.audience = "someone-else".into())),
        ),
        (
            "wrong issuer",
            bearer(minted(&|r| r.issuer = "https://evil.example".into())),
        ),
        ("alg none", bearer(alg_none_token(&app))),
        ("another key", bearer(other_key)),
        (
            "altered claims",
            bearer(format!("{head}.{forged_claims}.{sig}")),
        ),
    ];
    let sign_off = format!("/v1/rollouts/{id}/readiness/qa-signoff/sign-off");
    let rollout = format!("/v1/rollouts/{id}");
    let mut cases = Vec::new();
    for (what, authorization) in tokens {
        let calls = [
            case(what, Method::POST, "/v1/rollouts").json(example_create_body()),
            case(what, Method::POST, &sign_off).json(json!({})),
            case(what, Method::GET, &rollout),
        ];
        for c in calls {
            let c = Case {
                name: format!("{what} on {} {}", c.method, c.path),
                ..c
            };
            let c = match &authorization {
                Some(a) => c.header("authorization", a),
                None => c,
            };
            cases.push(c.expect(401, "unauthenticated"));
        }
    }
    // The clock leeway (30 s by default) tolerates a token that expired a moment ago...
    let just_expired = minted(&|r| r.now = now - 3600 - 10);
    cases.push(
        case("expired 10 s ago, within leeway", Method::GET, &rollout)
            .token(&just_expired)
            .status(200),
    );
    // ...and the token's age is judged by the server's clock.
    cases.push(
        case(
            "fresh token, server clock 1 h 31 s on",
            Method::GET,
            &rollout,
        )
        .token(&ALICE.token(&app))
        .after(Duration::seconds(3600 + 31))
        .expect(401, "unauthenticated"),
    );
    check(&app, cases).await;
}

// 403, 404, 405, 409 -------------------------------------------------------------------

async fn refusals(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = draft(&app).await;
    let alice = ALICE.token(&app);
    let running = running_example(&app).await;
    request_advance(&app, &running).await;
    sign_off(&app, &id, "qa-signoff", ALICE).await;
    let unknown = uuid::Uuid::new_v4();
    let r = |id: &str, rest: &str| format!("/v1/rollouts/{id}{rest}");

    let mut cases = vec![
        // 403: an approver cannot create; nobody signs off an item owned by another role.
        case("approver creates", Method::POST, "/v1/rollouts")
            .token(&BOB.token(&app))
            .json(example_create_body())
            .expect(403, "forbidden")
            .rule("permission"),
        case(
            "sign-off of another role's item",
            Method::POST,
            r(&id, "/readiness/runbook/sign-off"),
        )
        .token(&alice)
        .expect(403, "forbidden")
        .rule("permission"),
        // 404: unknown rollouts, ids that are not ids, unknown deviations and requests.
        case(
            "unknown deviation",
            Method::POST,
            format!("/v1/deviations/{unknown}/decision"),
        )
        .token(&alice)
        .json(json!({"decision": "grant"}))
        .expect(404, "not-found")
        .rule("R11"),
        // Roles before the deviation look-up: a read-only caller learns nothing (R10).
        case(
            "auditor decides an unknown deviation",
            Method::POST,
            format!("/v1/deviations/{unknown}/decision"),
        )
        .token(&AUDREY.token(&app))
        .json(json!({"decision": "grant"}))
        .expect(403, "forbidden")
        .rule("R10"),
        case(
            "request id that is no id",
            Method::POST,
            r(&id, "/advance-requests/not-a-uuid/withdraw"),
        )
        .token(&alice)
        .expect(404, "not-found"),
        // 405: a known path with a method it does not declare.
        case("DELETE on a rollout", Method::DELETE, r(&id, ""))
            .token(&alice)
            .expect(405, "method-not-allowed")
            .allow("GET"),
        case("PATCH on the rollout list", Method::PATCH, "/v1/rollouts")
            .token(&alice)
            .expect(405, "method-not-allowed")
            .allow("POST, GET"),
        // 409: commands that do not fit the lifecycle.
        case("start a draft", Method::POST, r(&id, "/start"))
            .token(&alice)
            .expect(409, "state-conflict"),
        case(
            "second open request",
            Method::POST,
            r(&running, "/advance-requests"),
        )
        .token(&alice)
        .expect(409, "state-conflict"),
        case(
            "complete before the last stage",
            Method::POST,
            r(&running, "/complete"),
        )
        .token(&alice)
        .expect(409, "state-conflict"),
        case(
            "sign off twice",
            Method::POST,
            r(&id, "/readiness/qa-signoff/sign-off"),
        )
        .token(&alice)
        .expect(409, "state-conflict"),
    ];
    for (method, path) in [
        (Method::GET, r(&unknown.to_string(), "")),
        (Method::GET, r(&unknown.to_string(), "/events")),
        (Method::POST, r(&unknown.to_string(), "/start")),
        (Method::POST, "/v1/rollouts/not-a-uuid/start".to_owned()),
        (Method::GET, "/v1/rollouts/not-a-uuid".to_owned()),
    ] {
        let name = format!("{method} {path}");
        let c = case(name, method.clone(), path).token(&alice);
        let c = if method == Method::POST {
            c.json(json!({}))
        } else {
            c
        };
        cases.push(c.expect(404, "not-found").rule("R11"));
    }
    // Unknown routes.
    for path in ["/v1/nothing-here", "/v2/rollouts", "/"] {
        cases.push(case(format!("GET {path}"), Method::GET, path).expect(404, "not-found"));
        cases.push(
            case(format!("POST {path}"), Method::POST, path)
                .token(&alice)
                .json(json!({}))
                .expect(404, "not-found"),
        );
    }
    check(&app, cases).await;
}

// 412, 428 -----------------------------------------------------------------------------

async fn preconditions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = draft(&app).await;
    sign_off(&app, &id, "runbook", SAM).await;
    let path = format!("/v1/rollouts/{id}/plan");
    let mut plan = example_create_body()["plan"].clone();
    plan["communications"]["internal"] = json!("Revised: watch conversion too.");
    let body = json!({ "plan": plan });
    let alice = ALICE.token(&app);
    let put = |name: &str| {
        case(name, Method::PUT, &path)
            .token(&alice)
            .json(body.clone())
    };

    // The rollout is at version 2.
    check(
        &app,
        vec![
            put("no If-Match").expect(428, "precondition-required"),
            put("stale version")
                .header("if-match", "\"1\"")
                .expect(412, "precondition-failed")
                .with("current_version", json!(2)),
            put("future version")
                .header("if-match", "\"3\"")
                .expect(412, "precondition-failed"),
            put("no ETag")
                .header("if-match", "yesterday")
                .expect(412, "precondition-failed"),
            // The current ETag, as a read gives it, goes through...
            case("read", Method::GET, format!("/v1/rollouts/{id}"))
                .token(&alice)
                .status(200)
                .header_is("etag", "\"2\""),
            put("current version")
                .header("if-match", "\"2\"")
                .status(200)
                .header_is("etag", "\"3\"")
                .writes(1),
            // ...and is stale once used.
            put("the same ETag again")
                .header("if-match", "\"2\"")
                .expect(412, "precondition-failed")
                .with("current_version", json!(3)),
        ],
    )
    .await;
}

// 413, 415 -----------------------------------------------------------------------------

async fn size_and_media_type(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = ALICE.token(&app);
    let id = draft(&app).await;
    let create = |name: &str| case(name, Method::POST, "/v1/rollouts").token(&alice);
    let sign_off = format!("/v1/rollouts/{id}/readiness/qa-signoff/sign-off");

    // Over --max-body-bytes=65536, and just under it.
    let mut big = example_create_body();
    big["plan"]["communications"]["internal"] = json!("x".repeat(70_000));
    let big = serde_json::to_vec(&big).unwrap();
    assert!(big.len() > 65_536);
    let padding = serde_json::to_vec(&json!({"reason": "y".repeat(66_000)})).unwrap();
    let mut fits = example_create_body();
    fits["plan"]["communications"]["internal"] = json!("x".repeat(9_000));
    let fits = serde_json::to_vec(&fits).unwrap();
    assert!(fits.len() < 65_536);
    let valid = serde_json::to_vec(&example_create_body()).unwrap();

    check(
        &app,
        vec![
            create("create over the limit")
                .raw("application/json", big)
                .expect(413, "payload-too-large"),
            case(
                "abort over the limit",
                Method::POST,
                format!("/v1/rollouts/{id}/abort"),
            )
            .token(&alice)
            .raw("application/json", padding)
            .expect(413, "payload-too-large"),
            // Just under the limit is read (and judged on its content).
            create("create under the limit")
                .raw("application/json", fits)
                .status(201)
                .writes(1),
            // Not JSON.
            create("text/plain")
                .raw("text/plain", valid.clone())
                .expect(415, "unsupported-media-type"),
            create("form")
                .raw("application/x-www-form-urlencoded", valid.clone())
                .expect(415, "unsupported-media-type"),
            create("no Content-Type")
                .untyped(valid)
                .expect(415, "unsupported-media-type"),
            case("text/plain sign-off", Method::POST, &sign_off)
                .token(&alice)
                .raw("text/plain", b"{}".to_vec())
                .expect(415, "unsupported-media-type"),
            // A JSON media type with parameters is JSON.
            case("JSON with a charset", Method::POST, &sign_off)
                .token(&alice)
                .raw("application/json; charset=utf-8", b"{}".to_vec())
                .status(200)
                .writes(1),
        ],
    )
    .await;
}

// 422 ----------------------------------------------------------------------------------

/// The example create body with one change.
fn create_body(change: impl FnOnce(&mut Value)) -> Value {
    let mut body = example_create_body();
    change(&mut body);
    body
}

async fn invalid_fields(backend: Backend) {
    use Fields::*;
    let app = TestApp::spawn(backend).await;
    let alice = ALICE.token(&app);
    let id = running_example(&app).await;
    let sam = SAM.token(&app);
    let create = |name: &str, body: Value| {
        case(name, Method::POST, "/v1/rollouts")
            .token(&alice)
            .json(body)
            .expect(422, "validation")
    };
    let command = |rest: &str, body: Value| {
        case(rest, Method::POST, format!("/v1/rollouts/{id}{rest}"))
            .token(&sam)
            .json(body)
            .expect(422, "validation")
    };
    let reading = json!({"metric": "error_rate", "value": "high", "samples": 1,
                         "observed_at": "2026-03-01T09:00:00Z"});

    check(
        &app,
        vec![
            // Unknown fields are named.
            create(
                "unknown field",
                create_body(|b| b["colour"] = json!("blue")),
            )
            .fields(Containing("colour"))
            .message("colour"),
            create(
                "unknown audience field",
                create_body(|b| b["plan"]["stages"][1]["audience"]["share"] = json!(5)),
            )
            .fields(Under("plan.stages[1].audience")),
            // Wrong types, missing fields.
            create(
                "title of the wrong type",
                create_body(|b| b["title"] = json!(5)),
            )
            .fields(Exactly(&["title"])),
            create(
                "missing soak",
                create_body(|b| {
                    b["plan"]["stages"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("min_soak_seconds");
                }),
            )
            .fields(FirstUnder("plan.stages[0]")),
            // An invalid plan: every violation, each at its path.
            create(
                "four violations",
                create_body(|b| {
                    b["plan"]["stages"][1]["audience"]["percentage"] = json!(150);
                    b["plan"]["stages"][0]["approvals"][0]["roles"] = json!(["viewer"]);
                    b["plan"]["stages"][2]["rollback_criteria"][0]["comparator"] = json!("about");
                    b["feature_key"] = json!("Not A Slug!");
                }),
            )
            .fields(Include(&[
                "plan.stages[1].audience.percentage",
                "plan.stages[0].approvals[0].roles[0]",
                "plan.stages[2].rollback_criteria[0].comparator",
                "feature_key",
            ])),
            // Percentages never decrease.
            create(
                "decreasing percentage",
                create_body(|b| b["plan"]["stages"][2]["audience"]["percentage"] = json!(2)),
            )
            .fields(Exactly(&["plan.stages[2].audience.percentage"])),
            // Other endpoints name their fields too.
            command("/metrics", json!({"readings": []})).fields(Containing("readings")),
            command("/metrics", json!({"readings": [reading]}))
                .fields(Containing("readings[0].value")),
            command("/rollback", json!({"reason": "x", "to_stage": -1}))
                .fields(Containing("to_stage")),
            command("/rollback", json!({"reason": "x", "to_stage": 0}))
                .fields(Containing("to_stage")),
            command("/pause", json!({"reason": "x", "why": "y"})).fields(Containing("why")),
            command("/advance", json!({"request_id": "nope"}))
                .token(&alice)
                .fields(Exactly(&["request_id"])),
            case(
                "as_of",
                Method::GET,
                format!("/v1/rollouts/{id}?as_of=last-tuesday"),
            )
            .token(&alice)
            .expect(422, "validation")
            .fields(Exactly(&["as_of"])),
        ],
    )
    .await;
}

// Idempotency-Key ----------------------------------------------------------------------

async fn idempotency(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = ALICE.token(&app);
    let sam = SAM.token(&app);
    const ANNA: Person = Person {
        sub: "anna",
        roles: &["release_manager"],
        teams: &["web"],
    };
    let key = ("idempotency-key", "create-checkout-1");
    let body = example_create_body();
    let create = |name: &str, token: &str, body: &Value| {
        case(name, Method::POST, "/v1/rollouts")
            .token(token)
            .json(body.clone())
    };
    let mut table = Table::new(&app);

    // On a fresh log: the first request writes, its retries answer the same, writing
    // nothing; the same key with another body is refused.
    table
        .run(vec![
            create("first", &alice, &body)
                .header(key.0, key.1)
                .status(201)
                .has("etag")
                .writes(1),
            create("retry", &alice, &body)
                .header(key.0, key.1)
                .status(201)
                .same_as("first"),
            create("retry again", &alice, &body)
                .header(key.0, key.1)
                .status(201)
                .same_as("first"),
            create(
                "same key, another body",
                &alice,
                &create_body(|b| {
                    b["title"] = json!("Two-click checkout");
                }),
            )
            .header(key.0, key.1)
            .expect(422, "idempotency-key-reused"),
        ])
        .await;
    let first_id = |t: &Table| {
        t.reply("first")
            .and_then(|r| r.body["rollout_id"].as_str())
            .unwrap_or("no-rollout")
            .to_owned()
    };
    let id = first_id(&table);
    let start = format!("/v1/rollouts/{id}/start");
    table
        .run(vec![
            // ...or on another route.
            case(
                "same key, another route",
                Method::POST,
                format!("/v1/rollouts/{id}/readiness/qa-signoff/sign-off"),
            )
            .token(&alice)
            .json(body.clone())
            .header(key.0, key.1)
            .status(422),
            // Keys belong to their caller: another person's identical key is a new request.
            create("another caller", &ANNA.token(&app), &body)
                .header(key.0, key.1)
                .status(201)
                .writes(1),
            // A command answered with a refusal is replayed as that refusal.
            case("refused start", Method::POST, &start)
                .token(&alice)
                .json(json!({}))
                .header("idempotency-key", "start-1")
                .status(409),
            case("refused start again", Method::POST, &start)
                .token(&alice)
                .json(json!({}))
                .header("idempotency-key", "start-1")
                .status(409)
                .same_as("refused start"),
        ])
        .await;
    if let Some(theirs) = table.reply("another caller") {
        if theirs.body["rollout_id"].as_str() == Some(id.as_str()) {
            table.fail(format!("another caller was given the first rollout {id}"));
        }
    }

    // Metrics pushed twice by automation with one key are recorded once.
    let running = running_example(&app).await;
    let push = readings(&app, &[("error_rate", 0.001, 1000)]);
    let metrics = format!("/v1/rollouts/{running}/metrics");
    let pushed = |name: &str| {
        case(name, Method::POST, &metrics)
            .token(&sam)
            .json(push.clone())
    };
    table
        .run(vec![
            pushed("push")
                .header("idempotency-key", "bot-push-0001")
                .status(200)
                .writes(1),
            pushed("push again")
                .header("idempotency-key", "bot-push-0001")
                .status(200)
                .same_as("push"),
            pushed("push without key").status(200).writes(1),
            // An unusable key is named.
            create("key too long", &alice, &body)
                .header("idempotency-key", "k".repeat(256))
                .status(422)
                .fields(Fields::Exactly(&["Idempotency-Key"])),
        ])
        .await;

    // Concurrent retries with one key: one rollout at most, every success the same answer.
    let before = app.event_count().await;
    let k = [("idempotency-key", "create-concurrently")];
    let send = || app.request(Method::POST, "/v1/rollouts", Some(&alice), Some(&body), &k);
    let (a, b, c) = tokio::join!(send(), send(), send());
    let mut created = Vec::new();
    for r in [&a, &b, &c] {
        match r.status.as_u16() {
            201 => created.push(r.body.clone()),
            // A retry still running elsewhere: refused as a problem, nothing written.
            409 if r.header("content-type") == Some("application/problem+json")
                && r.body["status"] == 409
                && !problem_type(r).is_empty() => {}
            other => table.fail(format!("concurrent retry: {other} {}", r.body)),
        }
    }
    if created.is_empty() || created.iter().any(|b| *b != created[0]) {
        table.fail(format!("concurrent retries created {created:?}"));
    }
    let written = app.event_count().await - before;
    if written != 1 {
        table.fail(format!("concurrent retries wrote {written} events"));
    }
    table.finish();
}

both_backends!(
    malformed_json,
    unauthenticated,
    refusals,
    preconditions,
    size_and_media_type,
    invalid_fields,
    idempotency,
);
