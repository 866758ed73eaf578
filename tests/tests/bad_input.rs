//! Bad requests of every kind answered as `application/problem+json` with the right status
//! (400, 401, 403, 404, 405, 409, 412, 413, 415, 422, 428), none of them writing an event;
//! and `Idempotency-Key` replays. Refusals are table rows ([`Case`], checked by [`check`]):
//! every row is sent and checked, and the failures are reported together.

use chrono::Duration;
use reqwest::Method;
use rollgate_e2e::flow::{
    ok, readings, request_advance, running_example, sign_off, Person, ALICE, AUDREY, BOB, SAM,
};
use rollgate_e2e::{both_backends, example_create_body, json, Backend, Reply, TestApp};
use serde_json::Value;

/// Sends a raw body that must be refused with `status` (as problem+json) without writing.
#[allow(clippy::too_many_arguments)]
async fn refused_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
    headers: &[(&str, &str)],
    status: u16,
) -> Reply {
    let before = app.event_count().await;
    let r = app
        .request_bytes(method, path, token, content_type, body, headers)
        .await;
    r.assert_problem(status, None);
    assert_eq!(app.event_count().await, before, "{}", r.body);
    r
}

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

/// One row of a table of bad requests: what is sent and the refusal expected.
struct Case {
    name: String,
    method: Method,
    path: String,
    token: Option<String>,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: u16,
    rule: Option<&'static str>,
    problem: Option<&'static str>,
    allow: Option<&'static str>,
}

fn case(name: impl Into<String>, method: Method, path: impl Into<String>) -> Case {
    Case {
        name: name.into(),
        method,
        path: path.into(),
        token: None,
        content_type: None,
        body: Vec::new(),
        status: 0,
        rule: None,
        problem: None,
        allow: None,
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
    fn expect(mut self, status: u16, problem: &'static str) -> Self {
        self.status = status;
        self.problem = Some(problem);
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
}

/// Sends every row and checks each one (status, problem+json, type, rule, `Allow`, nothing
/// written); the failures are reported together, so one does not hide the others.
async fn check(app: &TestApp, cases: Vec<Case>) {
    let mut failures = Vec::new();
    let count = cases.len();
    for c in cases {
        let before = app.event_count().await;
        let r = app
            .request_bytes(
                c.method.clone(),
                &c.path,
                c.token.as_deref(),
                c.content_type,
                c.body,
                &[],
            )
            .await;
        let written = app.event_count().await - before;
        let mut wrong = Vec::new();
        if r.status.as_u16() != c.status {
            wrong.push(format!("status {} (expected {})", r.status, c.status));
        }
        if r.header("content-type") != Some("application/problem+json") {
            wrong.push(format!("content type {:?}", r.header("content-type")));
        }
        if let Some(p) = c.problem {
            if problem_type(&r) != format!("urn:rollgate:problem:{p}") {
                wrong.push(format!("type {}", problem_type(&r)));
            }
        }
        if c.rule.is_some() && r.body["rule"].as_str() != c.rule {
            wrong.push(format!("rule {} (expected {:?})", r.body["rule"], c.rule));
        }
        if c.allow.is_some() && r.header("allow") != c.allow {
            wrong.push(format!(
                "Allow {:?} (expected {:?})",
                r.header("allow"),
                c.allow
            ));
        }
        if written != 0 {
            wrong.push(format!("{written} events written"));
        }
        if !wrong.is_empty() {
            failures.push(format!("{}: {} — {}", c.name, wrong.join(", "), r.body));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
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
    let sign_off_path = format!("/v1/rollouts/{id}/readiness/qa-signoff/sign-off");
    cases.push(
        case(
            "broken body on a command without input",
            Method::POST,
            &sign_off_path,
        )
        .token(&t)
        .raw("application/json", b"{".to_vec())
        .expect(400, "malformed-request"),
    );
    check(&app, cases).await;
    let r = app
        .request_bytes(
            Method::POST,
            &sign_off_path,
            Some(&t),
            None,
            Vec::new(),
            &[],
        )
        .await;
    r.assert_status(200);
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
    let rm = ["release_manager"];
    let web = ["web"];
    let now = rollgate_store::Clock::now(&*app.clock).timestamp();

    let mut expired = app.mint_request("alice", &rm, &web);
    expired.now = now - 7200;
    let mut not_yet = app.mint_request("alice", &rm, &web);
    not_yet.now = now + 600;
    let mut audience = app.mint_request("alice", &rm, &web);
    audience.audience = "someone-else".into();
    let mut issuer = app.mint_request("alice", &rm, &web);
    issuer.issuer = "https://evil.example".into();
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

    let tokens: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("garbage", Some("Bearer not-a-token".into())),
        ("empty bearer", Some("Bearer ".into())),
        ("basic scheme", Some("Basic YWxpY2U6c2VjcmV0".into())),
        ("expired", Some(format!("Bearer {}", app.mint(expired)))),
        (
            "not yet valid",
            Some(format!("Bearer {}", app.mint(not_yet))),
        ),
        (
            "wrong audience",
            Some(format!("Bearer {}", app.mint(audience))),
        ),
        ("wrong issuer", Some(format!("Bearer {}", app.mint(issuer)))),
        ("alg none", Some(format!("Bearer {}", alg_none_token(&app)))),
        ("another key", Some(format!("Bearer {other_key}"))),
        (
            "altered claims",
            Some(format!("Bearer {head}.{forged_claims}.{sig}")),
        ),
    ];
    let calls: [(Method, String, Option<Value>); 3] = [
        (
            Method::POST,
            "/v1/rollouts".to_owned(),
            Some(example_create_body()),
        ),
        (
            Method::POST,
            format!("/v1/rollouts/{id}/readiness/qa-signoff/sign-off"),
            Some(json!({})),
        ),
        (Method::GET, format!("/v1/rollouts/{id}"), None),
    ];
    for (what, authorization) in &tokens {
        for (method, path, body) in &calls {
            let before = app.event_count().await;
            let mut headers = Vec::new();
            if let Some(a) = authorization {
                headers.push(("authorization", a.as_str()));
            }
            let r = app
                .request(method.clone(), path, None, body.as_ref(), &headers)
                .await;
            assert_eq!(
                r.status.as_u16(),
                401,
                "{what} on {method} {path}: {}",
                r.body
            );
            r.assert_problem(401, None);
            assert_eq!(problem_type(&r), "urn:rollgate:problem:unauthenticated");
            assert_eq!(app.event_count().await, before, "{what}");
        }
    }

    // The clock leeway (30 s by default) tolerates a token that expired a moment ago...
    let mut just_expired = app.mint_request("alice", &rm, &web);
    just_expired.now = now - 3600 - 10;
    ok_with(&app, &app.mint(just_expired), &id).await;
    // ...and the token's age is judged by the server's clock.
    let t = ALICE.token(&app);
    app.advance_clock(Duration::seconds(3600 + 31));
    app.request(
        Method::GET,
        &format!("/v1/rollouts/{id}"),
        Some(&t),
        None,
        &[],
    )
    .await
    .assert_problem(401, None);
}

async fn ok_with(app: &TestApp, token: &str, id: &str) {
    app.get(&format!("/v1/rollouts/{id}"), token)
        .await
        .assert_status(200);
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

    let refused = |if_match: Option<&'static str>, status: u16| {
        let app = &app;
        let path = &path;
        let body = &body;
        let alice = &alice;
        async move {
            let before = app.event_count().await;
            let headers: Vec<(&str, &str)> =
                if_match.map(|v| ("if-match", v)).into_iter().collect();
            let r = app
                .request(Method::PUT, path, Some(alice), Some(body), &headers)
                .await;
            r.assert_problem(status, None);
            assert_eq!(app.event_count().await, before);
            r
        }
    };
    // 428 without If-Match.
    let r = refused(None, 428).await;
    assert_eq!(
        problem_type(&r),
        "urn:rollgate:problem:precondition-required"
    );
    // 412 with a stale version (the rollout is at 2), or with something that is no ETag.
    let r = refused(Some("\"1\""), 412).await;
    assert_eq!(r.body["current_version"], 2);
    assert_eq!(problem_type(&r), "urn:rollgate:problem:precondition-failed");
    refused(Some("\"3\""), 412).await;
    refused(Some("yesterday"), 412).await;

    // The current ETag, taken from a read, goes through.
    let etag = app
        .get(&format!("/v1/rollouts/{id}"), &alice)
        .await
        .header("etag")
        .unwrap()
        .to_owned();
    assert_eq!(etag, "\"2\"");
    let r = app
        .request(
            Method::PUT,
            &path,
            Some(&alice),
            Some(&body),
            &[("if-match", &etag)],
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.header("etag"), Some("\"3\""));
    // The same ETag again is stale now.
    let r = app
        .request(
            Method::PUT,
            &path,
            Some(&alice),
            Some(&body),
            &[("if-match", &etag)],
        )
        .await;
    r.assert_problem(412, None);
    assert_eq!(r.body["current_version"], 3);
}

// 413, 415 -----------------------------------------------------------------------------

async fn size_and_media_type(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = ALICE.token(&app);
    let id = draft(&app).await;

    // Over --max-body-bytes=65536.
    let mut big = example_create_body();
    big["plan"]["communications"]["internal"] = json!("x".repeat(70_000));
    let bytes = serde_json::to_vec(&big).unwrap();
    assert!(bytes.len() > 65_536);
    let r = refused_raw(
        &app,
        Method::POST,
        "/v1/rollouts",
        Some(&alice),
        Some("application/json"),
        bytes,
        &[],
        413,
    )
    .await;
    assert_eq!(problem_type(&r), "urn:rollgate:problem:payload-too-large");
    let padding = json!({"reason": "y".repeat(66_000)});
    refused_raw(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/abort"),
        Some(&alice),
        Some("application/json"),
        serde_json::to_vec(&padding).unwrap(),
        &[],
        413,
    )
    .await;
    // Just under the limit is read (and judged on its content).
    let mut fits = example_create_body();
    fits["plan"]["communications"]["internal"] = json!("x".repeat(9_000));
    let fits = serde_json::to_vec(&fits).unwrap();
    assert!(fits.len() < 65_536);
    app.request_bytes(
        Method::POST,
        "/v1/rollouts",
        Some(&alice),
        Some("application/json"),
        fits,
        &[],
    )
    .await
    .assert_status(201);

    // Not JSON.
    let body = serde_json::to_vec(&example_create_body()).unwrap();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let r = refused_raw(
            &app,
            Method::POST,
            "/v1/rollouts",
            Some(&alice),
            content_type,
            body.clone(),
            &[],
            415,
        )
        .await;
        assert_eq!(
            problem_type(&r),
            "urn:rollgate:problem:unsupported-media-type"
        );
    }
    refused_raw(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/readiness/qa-signoff/sign-off"),
        Some(&alice),
        Some("text/plain"),
        b"{}".to_vec(),
        &[],
        415,
    )
    .await;
    // A JSON media type with parameters, or a +json one, is JSON.
    app.request_bytes(
        Method::POST,
        &format!("/v1/rollouts/{id}/readiness/qa-signoff/sign-off"),
        Some(&alice),
        Some("application/json; charset=utf-8"),
        b"{}".to_vec(),
        &[],
    )
    .await
    .assert_status(200);
}

// 422 ----------------------------------------------------------------------------------

async fn invalid_fields(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = ALICE.token(&app);
    let refused = |body: Value| {
        let app = &app;
        let alice = &alice;
        async move {
            let r = app
                .refused(
                    Method::POST,
                    "/v1/rollouts",
                    Some(alice),
                    Some(&body),
                    422,
                    None,
                )
                .await;
            assert_eq!(problem_type(&r), "urn:rollgate:problem:validation");
            r
        }
    };

    // Unknown fields are named.
    let mut body = example_create_body();
    body["colour"] = json!("blue");
    let r = refused(body).await;
    let f = fields(&r);
    assert!(f.iter().any(|f| f.contains("colour")), "{}", r.body);
    assert!(r.body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("colour"));

    let mut body = example_create_body();
    body["plan"]["stages"][1]["audience"]["share"] = json!(5);
    let r = refused(body).await;
    let f = fields(&r);
    assert!(
        f.iter().any(|f| f.starts_with("plan.stages[1].audience")),
        "{}",
        r.body
    );

    // Wrong types, missing fields.
    let mut body = example_create_body();
    body["title"] = json!(5);
    assert_eq!(fields(&refused(body).await), ["title"]);
    let mut body = example_create_body();
    body["plan"]["stages"][0]
        .as_object_mut()
        .unwrap()
        .remove("min_soak_seconds");
    let r = refused(body).await;
    assert!(fields(&r)[0].starts_with("plan.stages[0]"), "{}", r.body);

    // An invalid plan: every violation, each at its path.
    let mut body = example_create_body();
    body["plan"]["stages"][1]["audience"]["percentage"] = json!(150);
    body["plan"]["stages"][0]["approvals"][0]["roles"] = json!(["viewer"]);
    body["plan"]["stages"][2]["rollback_criteria"][0]["comparator"] = json!("about");
    body["feature_key"] = json!("Not A Slug!");
    let r = refused(body).await;
    let f = fields(&r);
    for expected in [
        "plan.stages[1].audience.percentage",
        "plan.stages[0].approvals[0].roles[0]",
        "plan.stages[2].rollback_criteria[0].comparator",
        "feature_key",
    ] {
        assert!(f.iter().any(|f| f == expected), "{expected} in {}", r.body);
    }
    // Percentages never decrease.
    let mut body = example_create_body();
    body["plan"]["stages"][2]["audience"]["percentage"] = json!(2);
    let r = refused(body).await;
    assert_eq!(fields(&r), ["plan.stages[2].audience.percentage"]);

    // Other endpoints name their fields too.
    let id = running_example(&app).await;
    let sam = SAM.token(&app);
    for (path, body, field) in [
        ("/metrics", json!({"readings": []}), "readings"),
        (
            "/metrics",
            json!({"readings": [{"metric": "error_rate", "value": "high", "samples": 1, "observed_at": "2026-03-01T09:00:00Z"}]}),
            "readings[0].value",
        ),
        (
            "/rollback",
            json!({"reason": "x", "to_stage": -1}),
            "to_stage",
        ),
        (
            "/rollback",
            json!({"reason": "x", "to_stage": 0}),
            "to_stage",
        ),
        ("/pause", json!({"reason": "x", "why": "y"}), "why"),
    ] {
        let r = app
            .refused(
                Method::POST,
                &format!("/v1/rollouts/{id}{path}"),
                Some(&sam),
                Some(&body),
                422,
                None,
            )
            .await;
        let f = fields(&r);
        assert!(f.iter().any(|x| x.contains(field)), "{field} in {}", r.body);
    }
    let r = app
        .refused(
            Method::POST,
            &format!("/v1/rollouts/{id}/advance"),
            Some(&alice),
            Some(&json!({"request_id": "nope"})),
            422,
            None,
        )
        .await;
    assert_eq!(fields(&r), ["request_id"]);
    let r = app
        .refused(
            Method::GET,
            &format!("/v1/rollouts/{id}?as_of=last-tuesday"),
            Some(&alice),
            None,
            422,
            None,
        )
        .await;
    assert_eq!(fields(&r), ["as_of"]);
}

// Idempotency-Key ----------------------------------------------------------------------

async fn idempotency(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let alice = ALICE.token(&app);
    let key = [("idempotency-key", "create-checkout-1")];
    let body = example_create_body();

    let first = app
        .request(
            Method::POST,
            "/v1/rollouts",
            Some(&alice),
            Some(&body),
            &key,
        )
        .await;
    first.assert_status(201);
    let count = app.event_count().await;
    assert_eq!(count, 1);

    // A retry of the same request: the same answer, nothing written.
    for _ in 0..2 {
        let again = app
            .request(
                Method::POST,
                "/v1/rollouts",
                Some(&alice),
                Some(&body),
                &key,
            )
            .await;
        assert_eq!(again.status, first.status);
        assert_eq!(again.body, first.body);
        assert_eq!(again.header("etag"), first.header("etag"));
        assert!(first.header("etag").is_some());
        assert_eq!(again.header("location"), first.header("location"));
        assert_eq!(app.event_count().await, count);
    }

    // The same key with another body: 422, nothing written.
    let mut other = body.clone();
    other["title"] = json!("Two-click checkout");
    let r = app
        .request(
            Method::POST,
            "/v1/rollouts",
            Some(&alice),
            Some(&other),
            &key,
        )
        .await;
    r.assert_problem(422, None);
    assert_eq!(
        problem_type(&r),
        "urn:rollgate:problem:idempotency-key-reused"
    );
    assert_eq!(app.event_count().await, count);
    // ...or on another route.
    let id = first.body["rollout_id"].as_str().unwrap().to_owned();
    let r = app
        .request(
            Method::POST,
            &format!("/v1/rollouts/{id}/readiness/qa-signoff/sign-off"),
            Some(&alice),
            Some(&body),
            &key,
        )
        .await;
    r.assert_problem(422, None);
    assert_eq!(app.event_count().await, count);

    // Keys belong to their caller: another person's identical key is a new request.
    const ANNA: Person = Person {
        sub: "anna",
        roles: &["release_manager"],
        teams: &["web"],
    };
    let theirs = app
        .request(
            Method::POST,
            "/v1/rollouts",
            Some(&ANNA.token(&app)),
            Some(&body),
            &key,
        )
        .await;
    theirs.assert_status(201);
    assert_ne!(theirs.body["rollout_id"], first.body["rollout_id"]);
    assert_eq!(app.event_count().await, count + 1);

    // A command answered with a refusal is replayed as that refusal.
    let sam = SAM.token(&app);
    let start = format!("/v1/rollouts/{id}/start");
    let k = [("idempotency-key", "start-1")];
    let refusal = app
        .request(Method::POST, &start, Some(&alice), Some(&json!({})), &k)
        .await;
    refusal.assert_problem(409, None);
    let replay = app
        .request(Method::POST, &start, Some(&alice), Some(&json!({})), &k)
        .await;
    replay.assert_problem(409, None);
    assert_eq!(replay.body, refusal.body);

    // Metrics pushed twice by automation with one key are recorded once.
    let running = running_example(&app).await;
    let before = app.event_count().await;
    let push = readings(&app, &[("error_rate", 0.001, 1000)]);
    let k = [("idempotency-key", "bot-push-0001")];
    let path = format!("/v1/rollouts/{running}/metrics");
    let a = app
        .request(Method::POST, &path, Some(&sam), Some(&push), &k)
        .await;
    a.assert_status(200);
    let b = app
        .request(Method::POST, &path, Some(&sam), Some(&push), &k)
        .await;
    assert_eq!((b.status, &b.body), (a.status, &a.body));
    assert_eq!(b.header("etag"), a.header("etag"));
    assert_eq!(app.event_count().await, before + 1);
    ok(&app, Method::POST, &path, SAM, push).await;
    assert_eq!(app.event_count().await, before + 2);

    // Concurrent retries with one key: one rollout at most, every success the same answer.
    let before = app.event_count().await;
    let k = [("idempotency-key", "create-concurrently")];
    let send = || app.request(Method::POST, "/v1/rollouts", Some(&alice), Some(&body), &k);
    let (a, b, c) = tokio::join!(send(), send(), send());
    let mut created = Vec::new();
    for r in [&a, &b, &c] {
        match r.status.as_u16() {
            201 => created.push(r.body.clone()),
            409 => {
                r.assert_problem(409, None);
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert!(!created.is_empty());
    assert!(created.iter().all(|b| *b == created[0]));
    assert_eq!(app.event_count().await, before + 1);

    // An unusable key is named.
    let long = "k".repeat(256);
    let r = app
        .request(
            Method::POST,
            "/v1/rollouts",
            Some(&alice),
            Some(&body),
            &[("idempotency-key", long.as_str())],
        )
        .await;
    r.assert_problem(422, None);
    assert_eq!(fields(&r), ["Idempotency-Key"]);
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
