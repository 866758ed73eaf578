//! The projection-backed read side over HTTP: rollout lists, the approver inbox, the
//! decision log and the audit trail (filters, team scope, pagination while writes
//! continue), read-your-writes with `min_position` (and its 503), and one rollout's
//! timeline, replay and post-mortem.

use std::collections::BTreeSet;
use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use reqwest::Method;
use rollgate_e2e::flow::{
    advance_example, approve, create, now, ok, record, request_advance, rfc3339, running_example,
    sign_off, Person, ALICE, AUDREY, BOB, BOT, CAROL, GINA, HEALTHY, OTTO, SAM, VIC,
};
use rollgate_e2e::{both_backends, example_create_body, json, start_time, Backend, Reply, TestApp};
use rollgate_store::Clock;
use serde_json::Value;

/// An auditor of every team.
const ADA: Person = Person {
    sub: "ada",
    roles: &["auditor"],
    teams: &["*"],
};
/// Release manager and approver of team web: may request and approve, never their own.
const ALEX: Person = Person {
    sub: "alex",
    roles: &["release_manager", "approver"],
    teams: &["web"],
};

/// The example rollout for team api, created by OTTO; answers its id.
async fn create_api(app: &TestApp) -> String {
    let mut body = example_create_body();
    body["team"] = json!("api");
    body["feature_key"] = json!("api-rate-limits");
    let r = app.post("/v1/rollouts", &OTTO.token(app), body).await;
    r.assert_status(201);
    r.body["rollout_id"].as_str().unwrap().to_owned()
}

fn with_feature(key: &str) -> Value {
    let mut body = example_create_body();
    body["feature_key"] = json!(key);
    body
}

async fn get(app: &TestApp, path: &str, who: Person) -> Reply {
    app.get(path, &who.token(app)).await
}

/// A read that must answer 200; answers the body.
async fn read(app: &TestApp, path: &str, who: Person) -> Value {
    let r = get(app, path, who).await;
    r.assert_status(200);
    r.body
}

/// Appends `min_position` (the log's head now) to a path, so the read sees every write so far.
async fn fresh(app: &TestApp, path: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}min_position={}", app.event_count().await)
}

fn strs(page: &Value, key: &str) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {page}"))
        .iter()
        .map(|i| i[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn positions(page: &Value) -> Vec<u64> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {page}"))
        .iter()
        .map(|i| i["position"].as_u64().unwrap())
        .collect()
}

/// A refused read naming the offending query parameter.
async fn invalid(app: &TestApp, path: &str, field: &str) {
    let r = get(app, path, ALICE).await;
    r.assert_problem(422, None);
    assert_eq!(r.body["errors"][0]["field"], field, "{path}: {}", r.body);
}

/// Every page of a list, following `next_cursor`.
async fn all_pages(app: &TestApp, path: &str, who: Person) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let p = match &cursor {
            None => path.to_owned(),
            Some(c) => format!("{path}&cursor={c}"),
        };
        let page = read(app, &p, who).await;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
}

async fn text(app: &TestApp, path: &str, who: Person) -> (u16, String, String) {
    let res = app
        .client
        .get(format!("{}{}", app.address, path))
        .bearer_auth(who.token(app))
        .send()
        .await
        .expect("request sent");
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, ct, res.text().await.expect("body"))
}

// ---------------------------------------------------------------------------------------

/// `GET /v1/rollouts`: filters, team scope, summaries, bad parameters.
async fn rollout_list(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let draft = create(&app, example_create_body()).await;
    let running = running_example(&app).await;
    let search = create(&app, with_feature("search-v2")).await;
    let api = create_api(&app).await;

    let list = |q: &'static str, who: Person| {
        let app = &app;
        async move {
            let path = fresh(app, &format!("/v1/rollouts{q}")).await;
            strs(&read(app, &path, who).await, "id")
        }
    };
    assert_eq!(
        list("", ALICE).await,
        [draft.as_str(), running.as_str(), search.as_str()]
    );
    assert_eq!(
        list("?team=web", VIC).await,
        [draft.as_str(), running.as_str(), search.as_str()]
    );
    assert_eq!(
        list("?status=draft", ALICE).await,
        [draft.as_str(), search.as_str()]
    );
    assert_eq!(list("?status=running", ALICE).await, [running.as_str()]);
    assert_eq!(
        list("?feature_key=search-v2", ALICE).await,
        [search.as_str()]
    );
    assert_eq!(list("?stage=0", ALICE).await, [running.as_str()]);
    assert_eq!(list("?stage=1", ALICE).await, Vec::<String>::new());
    assert_eq!(
        list("?status=draft&feature_key=checkout-one-click", ALICE).await,
        [draft.as_str()]
    );
    // R11: other teams' rollouts are never listed, even when asked for by name.
    assert!(list("?team=api", ALICE).await.is_empty());
    assert_eq!(list("", OTTO).await, [api.as_str()]);
    assert_eq!(
        list("", ADA).await,
        [
            draft.as_str(),
            running.as_str(),
            search.as_str(),
            api.as_str()
        ]
    );
    assert_eq!(list("?team=api", ADA).await, [api.as_str()]);

    // The summary of a running rollout.
    let page = read(
        &app,
        &fresh(&app, "/v1/rollouts?status=running").await,
        ALICE,
    )
    .await;
    let s = &page["items"][0];
    assert_eq!(page["next_cursor"], Value::Null);
    assert_eq!(s["team"], "web");
    assert_eq!(s["feature_key"], "checkout-one-click");
    assert_eq!(s["title"], "One-click checkout");
    assert_eq!(s["stage_index"], 0);
    assert_eq!(s["stage_name"], "internal");
    assert_eq!(s["stage_count"], 3);
    assert_eq!(s["exposure"].as_f64(), Some(0.0));
    assert_eq!(s["created_by"], "alice");
    assert_eq!(s["created_at"], rfc3339(start_time()));

    // Bad parameters name themselves.
    for (q, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("stage=-1", "stage"),
        ("stage=first", "stage"),
        ("status=sideways", "status"),
        ("team=Not%20A%20Team", "team"),
        ("cursor=garbage", "cursor"),
        ("min_position=-1", "min_position"),
        ("min_position=soon", "min_position"),
        ("colour=blue", "colour"),
        ("team=web&team=api", "team"),
    ] {
        invalid(&app, &format!("/v1/rollouts?{q}"), field).await;
    }
    assert_eq!(
        read(&app, "/v1/rollouts?limit=1000", ALICE).await["items"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    app.request(Method::GET, "/v1/rollouts", None, None, &[])
        .await
        .assert_problem(401, None);
}

/// Pages never repeat or skip rows while writes land between the page fetches.
async fn pagination_while_writing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(create(&app, with_feature(&format!("feature-{i}"))).await);
    }

    // Rollouts, two a page: each page is followed by a new rollout and a change to one
    // already listed.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut writes = 0;
    loop {
        let path = match &cursor {
            None => fresh(&app, "/v1/rollouts?limit=2").await,
            Some(c) => fresh(&app, &format!("/v1/rollouts?limit=2&cursor={c}")).await,
        };
        let page = read(&app, &path, ALICE).await;
        assert!(page["items"].as_array().unwrap().len() <= 2);
        seen.extend(strs(&page, "id"));
        let Some(c) = page["next_cursor"].as_str() else {
            break;
        };
        cursor = Some(c.to_owned());
        if writes < 3 {
            writes += 1;
            created.push(create(&app, with_feature(&format!("late-{writes}"))).await);
            sign_off(&app, &created[writes - 1], "qa-signoff", ALICE).await;
        }
    }
    assert_eq!(writes, 3);
    assert_eq!(seen, created, "every rollout once, in creation order");

    // The audit trail, four a page, read by an auditor of every team while both teams
    // keep writing: exactly positions 1..=head, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut writes = 0;
    loop {
        let path = match &cursor {
            None => fresh(&app, "/v1/audit?limit=4").await,
            Some(c) => fresh(&app, &format!("/v1/audit?limit=4&cursor={c}")).await,
        };
        let page = read(&app, &path, ADA).await;
        seen.extend(positions(&page));
        let Some(c) = page["next_cursor"].as_str() else {
            break;
        };
        cursor = Some(c.to_owned());
        if writes < 4 {
            writes += 1;
            create_api(&app).await;
            sign_off(&app, &created[writes], "support-faq", ALICE).await;
        }
    }
    let head = app.event_count().await;
    assert_eq!(seen, (1..=head).collect::<Vec<_>>(), "no gap, no repeat");

    // A cursor is bound to its list's key: the last page's cursor answers nothing more.
    let all = all_pages(&app, &fresh(&app, "/v1/decisions?limit=1").await, ADA).await;
    let unique: BTreeSet<u64> = all
        .iter()
        .map(|d| d["position"].as_u64().unwrap())
        .collect();
    assert_eq!(unique.len(), all.len());
}

/// `min_position`: a read waits for the projections (503 with Retry-After when they do not
/// reach the position within the read wait); a position beyond the log's head is a 422.
async fn read_your_writes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .post("/v1/rollouts", &ALICE.token(&app), example_create_body())
        .await;
    r.assert_status(201);
    let id = r.body["rollout_id"].as_str().unwrap().to_owned();
    let position = r.body["position"].as_u64().unwrap();

    // Straight after the write, with its position: the read sees it.
    let page = read(
        &app,
        &format!("/v1/rollouts?min_position={position}"),
        ALICE,
    )
    .await;
    assert_eq!(strs(&page, "id"), [id.as_str()]);
    let page = read(&app, &format!("/v1/audit?min_position={position}"), ALICE).await;
    assert_eq!(positions(&page).last(), Some(&position));
    read(&app, "/v1/rollouts?min_position=0", ALICE).await;

    // A position beyond the log's head can never be met by waiting: 422 naming the
    // parameter, at once (no read wait).
    let far = app.event_count().await + 1000;
    for path in [
        format!("/v1/rollouts?min_position={far}"),
        format!("/v1/decisions?min_position={far}"),
        format!("/v1/rollouts/{id}/postmortem?min_position={far}"),
    ] {
        let started = Instant::now();
        invalid(&app, &path, "min_position").await;
        let waited = started.elapsed();
        assert!(
            waited < StdDuration::from_millis(1500),
            "{path} answered after {waited:?}"
        );
    }

    for path in [
        "/v1/audit?min_position=x".to_owned(),
        "/v1/approvals/inbox?min_position=-5".to_owned(),
        format!("/v1/rollouts/{id}/timeline?min_position=1.5"),
        format!("/v1/rollouts/{id}/replay?min_position="),
        format!("/v1/rollouts/{id}/postmortem?min_position=later"),
    ] {
        invalid(&app, &path, "min_position").await;
    }
    invalid(
        &app,
        &format!("/v1/rollouts/{id}/postmortem?limit=3"),
        "limit",
    )
    .await;

    // Readiness reports how far the read models lag (none, once they caught up), but no
    // internal position: it answers unauthenticated callers.
    read(&app, &fresh(&app, "/v1/rollouts").await, ALICE).await;
    let r = app.request(Method::GET, "/readyz", None, None, &[]).await;
    r.assert_status(200);
    assert_eq!(r.body["projection"]["lag"], 0);
    assert!(r.body["projection"].get("head").is_none(), "{}", r.body);
    assert!(r.body["projection"].get("position").is_none(), "{}", r.body);
}

/// `GET /v1/approvals/inbox` and `GET /v1/decisions`.
async fn inbox_and_decisions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running_example(&app).await;
    let other = running_example(&app).await;
    record(&app, &id, BOT, HEALTHY).await;
    app.advance_clock(Duration::days(1));
    let rid = request_advance(&app, &id).await;
    // ALEX (release manager and approver) asks on the other rollout.
    let r = ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{other}/advance-requests"),
        ALEX,
        json!({}),
    )
    .await;
    let rid2 = r.body["request_id"].as_str().unwrap().to_owned();

    let inbox = |who: Person| {
        let app = &app;
        async move {
            let path = fresh(app, "/v1/approvals/inbox").await;
            read(app, &path, who).await
        }
    };
    // Stage 1 needs two approvers and an SRE.
    assert_eq!(
        strs(&inbox(BOB).await, "request_id"),
        [rid.as_str(), rid2.as_str()]
    );
    assert_eq!(
        strs(&inbox(SAM).await, "request_id"),
        [rid.as_str(), rid2.as_str()]
    );
    // Never one's own request (R2).
    assert_eq!(strs(&inbox(ALEX).await, "request_id"), [rid.as_str()]);
    // Roles the quorum does not name, and other teams, see nothing.
    for who in [GINA, VIC, ALICE, AUDREY, OTTO, BOT] {
        assert!(
            strs(&inbox(who).await, "request_id").is_empty(),
            "{}",
            who.sub
        );
    }
    let item = &inbox(CAROL).await["items"][0];
    assert_eq!(item["rollout_id"], id.as_str());
    assert_eq!(item["team"], "web");
    assert_eq!(item["from_stage"], 0);
    assert_eq!(item["to_stage"], 1);
    assert_eq!(item["to_stage_name"], "beta-5");
    assert_eq!(item["requested_by"], "alice");
    assert_eq!(item["required"].as_array().unwrap().len(), 2);
    assert_eq!(item["approvals"], json!([]));

    // Once BOB approved, the request leaves his inbox (R3) and shows his approval to others.
    approve(&app, &id, &rid, BOB).await;
    assert_eq!(strs(&inbox(BOB).await, "request_id"), [rid2.as_str()]);
    let page = inbox(CAROL).await;
    assert_eq!(strs(&page, "request_id"), [rid.as_str(), rid2.as_str()]);
    assert_eq!(page["items"][0]["approvals"][0]["approver"], "bob");
    let one = read(
        &app,
        &fresh(&app, "/v1/approvals/inbox?limit=1").await,
        CAROL,
    )
    .await;
    assert_eq!(strs(&one, "request_id"), [rid.as_str()]);
    let rest = read(
        &app,
        &format!(
            "/v1/approvals/inbox?limit=1&cursor={}",
            one["next_cursor"].as_str().unwrap()
        ),
        CAROL,
    )
    .await;
    assert_eq!(strs(&rest, "request_id"), [rid2.as_str()]);
    assert_eq!(rest["next_cursor"], Value::Null);

    // The decision log.
    let approved_at = now(&app);
    app.advance_clock(Duration::minutes(10));
    let r = ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/decisions"),
        GINA,
        json!({
            "title": "Go ahead with beta-5",
            "rationale": "error rate is flat",
            "alternatives": ["wait a week"],
            "outcome": "advance",
        }),
    )
    .await;
    let decision_id = r.body["decision_id"].as_str().unwrap().to_owned();
    let decisions = |q: String, who: Person| {
        let app = &app;
        async move {
            let path = fresh(app, &format!("/v1/decisions{q}")).await;
            read(app, &path, who).await
        }
    };
    let page = decisions("?kind=approval".into(), ALICE).await;
    let a = &page["items"][0];
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(a["kind"], "approval");
    assert_eq!(a["subject_id"], rid.as_str());
    assert_eq!(a["rollout_id"], id.as_str());
    assert_eq!(a["actor"]["id"], "bob");
    assert_eq!(a["actor"]["roles"], json!(["approver"]));
    assert!(a["policy_version"].is_u64(), "{a}");
    assert_eq!(a["decided_at"], approved_at);

    let page = decisions("?kind=decision".into(), VIC).await;
    let d = &page["items"][0];
    assert_eq!(d["subject_id"], decision_id.as_str());
    assert_eq!(d["title"], "Go ahead with beta-5");
    assert_eq!(d["rationale"], "error rate is flat");
    assert_eq!(d["alternatives"], json!(["wait a week"]));
    assert_eq!(d["outcome"], "advance");
    assert_eq!(d["actor"]["id"], "gina");

    assert_eq!(
        strs(&decisions("?actor=bob".into(), ALICE).await, "kind"),
        ["approval"]
    );
    assert_eq!(
        strs(&decisions(format!("?rollout_id={id}"), ALICE).await, "kind"),
        ["approval", "decision"]
    );
    assert!(strs(
        &decisions(format!("?rollout_id={other}"), ALICE).await,
        "kind"
    )
    .is_empty());
    assert_eq!(
        strs(
            &decisions(format!("?from={approved_at}"), ALICE).await,
            "kind"
        ),
        ["approval", "decision"]
    );
    assert_eq!(
        strs(
            &decisions(format!("?to={}", now(&app)), ALICE).await,
            "kind"
        ),
        ["approval"]
    );
    assert!(strs(&decisions("?team=api".into(), ADA).await, "kind").is_empty());
    assert_eq!(
        strs(&decisions("?team=web".into(), ADA).await, "kind"),
        ["approval", "decision"]
    );
    // R11: other teams' decisions are not listed.
    assert!(strs(&decisions(String::new(), OTTO).await, "kind").is_empty());

    for (q, field) in [
        ("kind=vibes", "kind"),
        ("rollout_id=42", "rollout_id"),
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("verdict=yes", "verdict"),
    ] {
        invalid(&app, &format!("/v1/decisions?{q}"), field).await;
    }
    invalid(&app, "/v1/approvals/inbox?team=web", "team").await;
}

/// `GET /v1/audit`: the documented entry shape, filters and who sees what.
async fn audit_trail(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = create(&app, example_create_body()).await;
    app.advance_clock(Duration::hours(1));
    let hour_later = now(&app);
    sign_off(&app, &id, "qa-signoff", ALICE).await;
    sign_off(&app, &id, "runbook", SAM).await;
    let api = create_api(&app).await;
    let head = app.event_count().await;

    let audit = |q: String, who: Person| {
        let app = &app;
        async move {
            let path = fresh(app, &format!("/v1/audit{q}")).await;
            read(app, &path, who).await
        }
    };
    let page = audit(String::new(), ADA).await;
    assert_eq!(positions(&page), (1..=head).collect::<Vec<_>>());
    let first = &page["items"][0];
    let keys: BTreeSet<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "position",
            "stream",
            "rollout_id",
            "team",
            "event_type",
            "actor",
            "recorded_at",
            "request_id",
            "summary"
        ])
    );
    assert_eq!(first["position"], 1);
    assert_eq!(first["stream"], format!("rollout-{id}"));
    assert_eq!(first["rollout_id"], id.as_str());
    assert_eq!(first["team"], "web");
    assert_eq!(first["event_type"], "RolloutCreated");
    assert_eq!(
        first["actor"],
        json!({"id": "alice", "roles": ["release_manager"]})
    );
    assert_eq!(first["recorded_at"], rfc3339(start_time()));
    assert!(first["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(first["summary"].as_str().is_some_and(|s| !s.is_empty()));

    let types = |page: &Value| strs(page, "event_type");
    assert_eq!(
        types(&audit("?actor=sam".into(), ADA).await),
        ["ReadinessSignedOff"]
    );
    assert_eq!(
        strs(
            &audit("?event_type=RolloutCreated".into(), ADA).await,
            "rollout_id"
        ),
        [id.as_str(), api.as_str()]
    );
    assert_eq!(
        strs(
            &audit(format!("?rollout_id={api}"), ADA).await,
            "rollout_id"
        ),
        [api.as_str()]
    );
    assert_eq!(
        strs(&audit("?team=api".into(), ADA).await, "rollout_id"),
        [api.as_str()]
    );
    assert_eq!(
        types(&audit(format!("?to={hour_later}"), ADA).await),
        ["RolloutCreated"]
    );
    assert_eq!(
        positions(&audit(format!("?from={hour_later}&team=web"), ADA).await),
        [2, 3]
    );

    // Every authenticated caller reads the trail, within their teams only.
    for who in [VIC, AUDREY, ALICE, BOT] {
        let page = audit(String::new(), who).await;
        assert_eq!(positions(&page), [1, 2, 3], "{}", who.sub);
    }
    assert!(positions(&audit(format!("?rollout_id={api}"), AUDREY).await).is_empty());
    assert_eq!(positions(&audit(String::new(), OTTO).await), [4]);

    for (q, field) in [
        ("to=tomorrow", "to"),
        ("from=2026-03-01", "from"),
        ("rollout_id=nope", "rollout_id"),
        ("limit=5000", "limit"),
        ("cursor=p1", "cursor"),
        ("actor=", "actor"),
        ("position=3", "position"),
    ] {
        invalid(&app, &format!("/v1/audit?{q}"), field).await;
    }
}

/// Timeline and replay of one rollout, and R11 on every per-rollout read.
async fn timeline_and_replay(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = rollgate_e2e::flow::ready_example(&app).await;
    app.advance_clock(Duration::minutes(5));
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/start"),
        ALICE,
        json!({}),
    )
    .await;
    app.advance_clock(Duration::minutes(10));
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/timeline/annotations"),
        SAM,
        json!({"text": "canary dashboards looked clean", "about": "T+0"}),
    )
    .await;

    let timeline = read(&app, &format!("/v1/rollouts/{id}/timeline"), VIC).await;
    assert_eq!(timeline["rollout_id"], id.as_str());
    assert_eq!(timeline["next_cursor"], Value::Null);
    let items = timeline["items"].as_array().unwrap();
    let types: Vec<&str> = items
        .iter()
        .map(|i| i["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "RolloutCreated",
            "ReadinessSignedOff",
            "ReadinessSignedOff",
            "ReadinessSignedOff",
            "RolloutReady",
            "RolloutStarted",
            "Annotated"
        ]
    );
    let offsets: Vec<i64> = items
        .iter()
        .map(|i| i["offset_seconds"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, [-300, -300, -300, -300, -300, 0, 600]);
    let note = &items[6];
    assert_eq!(note["kind"], "annotation");
    assert_eq!(note["actor"]["id"], "sam");
    assert_eq!(
        note["annotation"],
        json!({"text": "canary dashboards looked clean", "about": "T+0"})
    );
    assert_eq!(note["summary"], "sam annotated T+0");
    assert!(items[..6].iter().all(|i| i["kind"] == "event"));

    // Replay: the state after each event.
    let replay = read(&app, &format!("/v1/rollouts/{id}/replay"), VIC).await;
    let steps = replay["items"].as_array().unwrap();
    assert_eq!(steps.len(), 7);
    let events = read(&app, &format!("/v1/rollouts/{id}/events"), VIC).await;
    assert_eq!(positions(&replay), positions(&events));
    let status: Vec<&str> = steps
        .iter()
        .map(|s| s["state"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        status,
        ["draft", "draft", "draft", "draft", "ready", "running", "running"]
    );
    assert_eq!(steps[0]["state"]["readiness_signed"], json!([]));
    assert_eq!(
        steps[2]["state"]["readiness_signed"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(steps[4]["state"]["stage_index"], Value::Null);
    assert_eq!(steps[5]["state"]["stage_index"], 0);
    assert_eq!(steps[5]["state"]["stage_name"], "internal");
    assert_eq!(steps[5]["state"]["annotations"], 0);
    assert_eq!(steps[6]["state"]["annotations"], 1);
    let versions: Vec<u64> = steps
        .iter()
        .map(|s| s["state"]["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (1..=7).collect::<Vec<_>>());

    // Pages of three: the same steps and entries.
    let paged = all_pages(&app, &format!("/v1/rollouts/{id}/replay?limit=3"), VIC).await;
    assert_eq!(&paged, steps);
    let paged = all_pages(&app, &format!("/v1/rollouts/{id}/timeline?limit=2"), VIC).await;
    assert_eq!(&paged, items);
    invalid(
        &app,
        &format!("/v1/rollouts/{id}/timeline?cursor=abc"),
        "cursor",
    )
    .await;
    invalid(&app, &format!("/v1/rollouts/{id}/replay?limit=0"), "limit").await;
    invalid(&app, &format!("/v1/rollouts/{id}/replay?as_of=3"), "as_of").await;

    // R11: another team's rollout answers exactly as one that does not exist.
    let unknown = uuid::Uuid::new_v4();
    for view in ["timeline", "replay", "postmortem"] {
        for (path, who) in [
            (format!("/v1/rollouts/{id}/{view}"), OTTO),
            (format!("/v1/rollouts/{unknown}/{view}"), ALICE),
            (format!("/v1/rollouts/not-a-uuid/{view}"), ALICE),
        ] {
            let r = get(&app, &path, who).await;
            r.assert_problem(404, None);
            assert_eq!(r.body["detail"], "rollout not found", "{path}");
        }
    }
    read(&app, &format!("/v1/rollouts/{id}/timeline"), ADA).await;
}

/// A scripted incident: a breach at stage 1 rolls back automatically, a decision is
/// recorded, the rollout resumes. The post-mortem tells it in order with T+offsets.
async fn postmortem_of_an_incident(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running_example(&app).await; // T+0 = start_time()
    advance_example(&app, &id, 0).await; // soaks a day: T+24:00:00

    app.advance_clock(Duration::hours(1)); // T+25:00:00
    let r = record(&app, &id, BOT, &[("error_rate", 0.05, 2000)]).await;
    assert_eq!(
        r.body["events"],
        json!(["ReadingsRecorded", "GuardrailBreached", "RolledBack"])
    );
    app.advance_clock(Duration::minutes(15)); // T+25:15:00
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/decisions"),
        GINA,
        json!({
            "title": "Resume after the error-rate spike",
            "rationale": "the spike came from a misconfigured load test",
            "alternatives": ["stay rolled back", "abort"],
            "outcome": "resume",
        }),
    )
    .await;
    app.advance_clock(Duration::minutes(5)); // T+25:20:00
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/resume"),
        SAM,
        json!({}),
    )
    .await;
    app.advance_clock(Duration::minutes(40)); // T+26:00:00
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/timeline/annotations"),
        SAM,
        json!({"text": "the load test targeted production"}),
    )
    .await;

    // The timeline carries the offsets.
    let timeline = read(&app, &format!("/v1/rollouts/{id}/timeline"), ALICE).await;
    let offset_of = |ty: &str| {
        timeline["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["event_type"] == ty)
            .map(|i| (i["offset_seconds"].as_i64().unwrap(), i["kind"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(offset_of("GuardrailBreached"), [(90_000, json!("breach"))]);
    assert_eq!(offset_of("RolledBack"), [(90_000, json!("event"))]);
    assert_eq!(offset_of("DecisionRecorded"), [(90_900, json!("event"))]);
    assert_eq!(offset_of("Resumed"), [(91_200, json!("event"))]);
    assert_eq!(offset_of("Annotated"), [(93_600, json!("annotation"))]);

    let (status, content_type, md) =
        text(&app, &format!("/v1/rollouts/{id}/postmortem"), AUDREY).await;
    assert_eq!(status, 200, "{md}");
    assert_eq!(content_type, "text/markdown; charset=utf-8");
    assert!(
        md.starts_with("# Post-mortem: One-click checkout (`checkout-one-click`)"),
        "{md}"
    );
    assert!(
        md.contains("- Time from first breach (T+25:00:00) to rollback (T+25:00:00): 0s (0 s)"),
        "{md}"
    );
    // The timeline section: the incident's rows in order, each at its offset.
    let rows = [
        "| T+0:00:00 |",
        "| RolloutStarted |",
        "| T+24:00:00 |",
        "| Advanced |",
        "| T+25:00:00 |",
        "| GuardrailBreached **breach** |",
        "| T+25:00:00 |",
        "| RolledBack |",
        "| T+25:15:00 |",
        "| DecisionRecorded |",
        "| T+25:20:00 |",
        "| Resumed |",
        "| T+26:00:00 |",
        "| Annotated *annotation* |",
    ];
    let timeline_section = &md[md.find("## Timeline").expect("timeline section")..];
    let mut at = 0;
    for row in rows {
        let found = timeline_section[at..]
            .find(row)
            .unwrap_or_else(|| panic!("{row} after byte {at} in:\n{md}"));
        at += found + row.len();
    }
    // The other sections, in order too.
    let sections = [
        "## Decisions",
        "T+25:00:00",
        "T+25:15:00 **Resume after the error-rate spike** by gina",
        "Alternatives considered: stay rolled back; abort.",
        "## Deviations",
        "## Guardrail breaches",
        "- T+25:00:00 ",
        "value 0.05 over 2000 samples",
        "action: rollback",
        "## Annotations",
        "- T+26:00:00 sam: the load test targeted production",
    ];
    let mut at = 0;
    for part in sections {
        let found = md[at..]
            .find(part)
            .unwrap_or_else(|| panic!("{part:?} after byte {at} in:\n{md}"));
        at += found + part.len();
    }

    // Another team's post-mortem does not exist.
    let (status, content_type, _) =
        text(&app, &format!("/v1/rollouts/{id}/postmortem"), OTTO).await;
    assert_eq!(
        (status, content_type.as_str()),
        (404, "application/problem+json")
    );
    // The automatic rollback and the recorded decision are in the decision log.
    let page = read(
        &app,
        &fresh(&app, &format!("/v1/decisions?rollout_id={id}")).await,
        AUDREY,
    )
    .await;
    let kinds = strs(&page, "kind");
    let tail: Vec<&str> = kinds
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(tail, ["rollback", "decision"]);
}

/// Deciding a deviation finds its rollout through the deviation index, keeping R11: another
/// team's deviation answers 404 exactly as an unknown one.
async fn deviation_decisions_use_the_index(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = running_example(&app).await;
    let expires = rfc3339(app.clock.now() + Duration::days(2));
    let r = ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/deviations"),
        ALICE,
        json!({
            "rules": ["R4"],
            "justification": "the internal cohort has been live for a week",
            "expires_at": expires,
        }),
    )
    .await;
    let did = r.body["deviation_id"].as_str().unwrap().to_owned();
    // The index has it.
    read(&app, &fresh(&app, "/v1/rollouts").await, ALICE).await;
    let grant = json!({"decision": "grant", "comment": "accepted"});
    for path in [
        format!("/v1/deviations/{did}/decision"),
        format!("/v1/deviations/{}/decision", uuid::Uuid::new_v4()),
    ] {
        let r = app
            .refused(
                Method::POST,
                &path,
                Some(&OTTO.token(&app)),
                Some(&grant),
                404,
                Some("R11"),
            )
            .await;
        assert_eq!(r.body["detail"], "deviation not found");
    }
    let r = ok(
        &app,
        Method::POST,
        &format!("/v1/deviations/{did}/decision"),
        GINA,
        grant,
    )
    .await;
    assert_eq!(r.body["deviation_id"], did.as_str());
    let page = read(
        &app,
        &fresh(&app, "/v1/decisions?kind=deviation_granted").await,
        ALICE,
    )
    .await;
    assert_eq!(strs(&page, "subject_id"), [did.as_str()]);
}

both_backends!(
    rollout_list,
    pagination_while_writing,
    read_your_writes,
    inbox_and_decisions,
    audit_trail,
    timeline_and_replay,
    postmortem_of_an_incident,
    deviation_decisions_use_the_index,
);
