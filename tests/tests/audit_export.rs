//! The whole-log audit endpoints and the event stream, end to end: export (NDJSON and CSV)
//! verified offline, tampering and truncation detected, `/v1/audit/verify` and
//! `/v1/audit/head`, who may read the whole log, and Server-Sent Events (order, resume
//! with `Last-Event-ID`, live events, team scope).

use std::time::Duration;

use reqwest::Method;
use rollgate_e2e::flow::{self, Person, ALICE, AUDREY, BOB, OTTO, SAM, VIC};
use rollgate_e2e::{both_backends, example_create_body, json, Backend, TestApp};
use rollgate_server::export::{verify_export, ExportFormat};
use rollgate_store::{EventData, ExpectedVersion, Head, VerifyReport};
use serde_json::Value;

/// Reads the whole log: teams `*` and the auditor role.
const AUDITOR_ALL: Person = Person {
    sub: "ada",
    roles: &["auditor"],
    teams: &["*"],
};
/// A governance admin of every team (may read the whole log too).
const ADMIN_ALL: Person = Person {
    sub: "gus",
    roles: &["governance_admin"],
    teams: &["*"],
};
/// A release manager of every team: no auditor role.
const MANAGER_ALL: Person = Person {
    sub: "rex",
    roles: &["release_manager", "viewer"],
    teams: &["*"],
};

/// Some history in two teams: the running example rollout of team web with a pause, a
/// resume, readings and an approval round, and a draft of team api.
async fn history(app: &TestApp) -> (String, String) {
    let web = flow::running_example(app).await;
    flow::record(app, &web, SAM, flow::HEALTHY).await;
    let rid = flow::request_advance(app, &web).await;
    flow::approve(app, &web, &rid, BOB).await;
    flow::ok(
        app,
        Method::POST,
        &format!("/v1/rollouts/{web}/pause"),
        SAM,
        json!({"reason": "looking at a dashboard"}),
    )
    .await;
    flow::ok(
        app,
        Method::POST,
        &format!("/v1/rollouts/{web}/resume"),
        ALICE,
        json!({}),
    )
    .await;
    let mut body = example_create_body();
    body["team"] = json!("api");
    body["feature_key"] = json!("api-rate-limits");
    let r = app.post("/v1/rollouts", &OTTO.token(app), body).await;
    r.assert_status(201);
    let api = r.body["rollout_id"].as_str().unwrap().to_owned();
    (web, api)
}

/// `GET /v1/audit/export{query}` as `who`: status, content type, body.
async fn export(app: &TestApp, query: &str, who: Person) -> (u16, String, Vec<u8>) {
    let res = app
        .client
        .get(format!("{}/v1/audit/export{query}", app.address))
        .bearer_auth(who.token(app))
        .send()
        .await
        .expect("export request");
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = res.bytes().await.expect("export body").to_vec();
    (status, content_type, bytes)
}

async fn head(app: &TestApp) -> Head {
    let r = app.get("/v1/audit/head", &AUDITOR_ALL.token(app)).await;
    r.assert_status(200);
    serde_json::from_value(r.body).expect("a head")
}

fn bad_at(report: &VerifyReport) -> u64 {
    match report {
        VerifyReport::Bad {
            first_bad_position, ..
        } => *first_bad_position,
        ok => panic!("expected a failure, got {ok:?}"),
    }
}

async fn export_ndjson_and_csv_verify_offline(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    history(&app).await;
    let head = head(&app).await;
    assert_eq!(head.position, app.event_count().await);
    assert!(head.position >= 10, "history is {} events", head.position);

    // NDJSON, the default.
    let (status, content_type, ndjson) = export(&app, "", AUDITOR_ALL).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/x-ndjson");
    let text = String::from_utf8(ndjson.clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, head.position);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["position"], i as u64 + 1);
        for field in [
            "stream",
            "version",
            "id",
            "type",
            "schema_version",
            "payload",
            "metadata",
            "recorded_at",
            "prev_hash",
            "hash",
        ] {
            assert!(!line[field].is_null(), "{field} missing: {line}");
        }
    }
    assert_eq!(lines.last().unwrap()["hash"], json!(head.hash));
    let report = verify_export(ndjson.as_slice(), ExportFormat::Ndjson, Some(&head));
    assert_eq!(
        report,
        VerifyReport::Ok {
            ok: true,
            verified_through: head.position,
            head_hash: head.hash.clone()
        }
    );

    // CSV, by a governance admin of every team.
    let (status, content_type, csv) = export(&app, "?format=csv", ADMIN_ALL).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let csv_text = String::from_utf8(csv.clone()).unwrap();
    assert!(csv_text.starts_with(
        "position,stream,version,id,type,schema_version,payload,metadata,recorded_at,prev_hash,hash\n"
    ));
    let report = verify_export(csv.as_slice(), ExportFormat::Csv, Some(&head));
    assert!(report.is_ok(), "{report:?}");

    // A range: positions 4..=7, anchored by the hash at position 3.
    let (_, _, part) = export(&app, "?from_position=4&to_position=7", AUDITOR_ALL).await;
    let part_lines: Vec<Value> = String::from_utf8(part.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        part_lines
            .iter()
            .map(|l| l["position"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
    let anchor = Head {
        position: 3,
        hash: lines[2]["hash"].as_str().unwrap().to_owned(),
    };
    let report = verify_export(part.as_slice(), ExportFormat::Ndjson, Some(&anchor));
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(
        bad_at(&verify_export(part.as_slice(), ExportFormat::Ndjson, None)),
        1,
        "a partial export without its anchor is not a verified log"
    );

    // Bad query values.
    app.get("/v1/audit/export?format=xml", &AUDITOR_ALL.token(&app))
        .await
        .assert_problem(422, None);
    app.get("/v1/audit/export?from_position=0", &AUDITOR_ALL.token(&app))
        .await
        .assert_problem(422, None);
}

async fn tampered_and_truncated_exports_fail(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    history(&app).await;
    let head = head(&app).await;
    let (_, _, ndjson) = export(&app, "", AUDITOR_ALL).await;
    let text = String::from_utf8(ndjson).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    // One digit of a payload changed: the readings (ReadingsRecorded) carry numbers.
    let (index, line) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.contains("\"type\":\"ReadingsRecorded\""))
        .expect("a readings event");
    let at = line.find("\"payload\":").unwrap();
    let digit = line[at..]
        .char_indices()
        .find(|(_, c)| c.is_ascii_digit())
        .map(|(i, _)| at + i)
        .expect("a digit in the payload");
    let mut bytes = line.as_bytes().to_vec();
    bytes[digit] = if bytes[digit] == b'7' { b'8' } else { b'7' };
    let changed = String::from_utf8(bytes).unwrap();
    let mut tampered: Vec<&str> = lines.clone();
    tampered[index] = &changed;
    let tampered = tampered.join("\n") + "\n";
    let report = verify_export(tampered.as_bytes(), ExportFormat::Ndjson, None);
    assert_eq!(bad_at(&report), index as u64 + 1, "{report:?}");

    // The same change in the CSV export.
    let (_, _, csv) = export(&app, "?format=csv", AUDITOR_ALL).await;
    let csv = String::from_utf8(csv).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    let row = rows[index + 1];
    assert!(row.contains("ReadingsRecorded"), "{row}");
    // The error rate reading (0.003) becomes 0.004.
    let changed = row.replacen("0.003", "0.004", 1);
    assert_ne!(changed, row);
    let mut tampered: Vec<&str> = rows.clone();
    tampered[index + 1] = &changed;
    let tampered = tampered.join("\n") + "\n";
    let report = verify_export(tampered.as_bytes(), ExportFormat::Csv, None);
    assert_eq!(bad_at(&report), index as u64 + 1, "{report:?}");

    // A line that no longer parses names its position.
    let mut broken: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    let half = broken[4].len() / 2;
    broken[4].truncate(half);
    let report = verify_export(
        (broken.join("\n") + "\n").as_bytes(),
        ExportFormat::Ndjson,
        None,
    );
    assert_eq!(bad_at(&report), 5, "{report:?}");

    // Truncated: the last two events dropped. Alone it still chains; against the head
    // exported earlier it fails at the first missing position.
    let truncated = lines[..lines.len() - 2].join("\n") + "\n";
    assert!(verify_export(truncated.as_bytes(), ExportFormat::Ndjson, None).is_ok());
    let report = verify_export(truncated.as_bytes(), ExportFormat::Ndjson, Some(&head));
    assert_eq!(bad_at(&report), head.position - 1, "{report:?}");
}

async fn verify_and_head_answers(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let token = AUDITOR_ALL.token(&app);
    // The empty log.
    let r = app.get("/v1/audit/head", &token).await;
    r.assert_status(200);
    assert_eq!(r.body, json!({"position": 0, "hash": "0".repeat(64)}));
    let r = app.get("/v1/audit/verify", &token).await;
    r.assert_status(200);
    assert_eq!(
        r.body,
        json!({"ok": true, "verified_through": 0, "head_hash": "0".repeat(64)})
    );

    history(&app).await;
    let head = head(&app).await;
    let r = app.get("/v1/audit/verify", &token).await;
    r.assert_status(200);
    assert_eq!(
        r.body,
        json!({"ok": true, "verified_through": head.position, "head_hash": head.hash})
    );
    // Checked against an exported head: the same one, an older one, a rewritten one, one
    // from the future (truncation).
    let r = app
        .get(
            &format!(
                "/v1/audit/verify?position={}&hash={}",
                head.position, head.hash
            ),
            &token,
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body["ok"], true, "{}", r.body);
    let r = app
        .get(
            &format!("/v1/audit/verify?position=3&hash={}", "ab".repeat(32)),
            &token,
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body["ok"], false);
    assert_eq!(r.body["first_bad_position"], 3);
    assert!(r.body["reason"].as_str().unwrap().contains("rewritten"));
    let r = app
        .get(
            &format!(
                "/v1/audit/verify?position={}&hash={}",
                head.position + 5,
                head.hash
            ),
            &token,
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body["ok"], false);
    assert_eq!(r.body["first_bad_position"], head.position + 1);
    // Half a head, or not a hash.
    app.get("/v1/audit/verify?position=3", &token)
        .await
        .assert_problem(422, None);
    app.get("/v1/audit/verify?position=3&hash=xyz", &token)
        .await
        .assert_problem(422, None);
}

async fn whole_log_reads_need_auditor_of_every_team(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    history(&app).await;
    for path in [
        "/v1/audit/export",
        "/v1/audit/export?format=csv",
        "/v1/audit/verify",
        "/v1/audit/head",
    ] {
        // An auditor of one team: the export would have holes.
        for who in [AUDREY, VIC, MANAGER_ALL, ALICE, OTTO] {
            let r = app.get(path, &who.token(&app)).await;
            r.assert_problem(403, Some("permission"));
        }
        app.request(Method::GET, path, None, None, &[])
            .await
            .assert_problem(401, None);
        app.request(Method::GET, path, Some("not-a-token"), None, &[])
            .await
            .assert_problem(401, None);
        for who in [AUDITOR_ALL, ADMIN_ALL] {
            let res = app
                .client
                .get(format!("{}{path}", app.address))
                .bearer_auth(who.token(&app))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status().as_u16(), 200, "{path} as {}", who.sub);
        }
    }
    // The stream needs a token too.
    app.request(Method::GET, "/v1/events/stream?from=0", None, None, &[])
        .await
        .assert_problem(401, None);
}

/// A large log is exported chunk by chunk (no Content-Length: the body is streamed).
async fn large_export_is_streamed(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let store = app.db.store(Default::default()).await;
    const EVENTS: u64 = 20_000;
    for batch in 0..(EVENTS / 500) {
        let events = (0..500)
            .map(|i| EventData {
                id: uuid::Uuid::new_v4(),
                event_type: "BulkLoaded".into(),
                schema_version: 1,
                payload: json!({"n": batch * 500 + i, "text": "x".repeat(64)}),
                metadata: json!({"team": "web", "actor": {"id": "loader", "roles": []}}),
            })
            .collect();
        store
            .append(&format!("bulk-{}", batch % 7), ExpectedVersion::Any, events)
            .await
            .unwrap();
    }
    let mut res = app
        .client
        .get(format!("{}/v1/audit/export", app.address))
        .bearer_auth(AUDITOR_ALL.token(&app))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(
        res.headers().get("content-length").is_none(),
        "the export is streamed, not buffered"
    );
    let mut body = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = res.chunk().await.unwrap() {
        chunks += 1;
        body.extend_from_slice(&chunk);
    }
    assert!(chunks > 1, "one chunk for {EVENTS} events");
    let head = store.head().await.unwrap();
    assert_eq!(head.position, EVENTS);
    let report = verify_export(body.as_slice(), ExportFormat::Ndjson, Some(&head));
    assert_eq!(
        report,
        VerifyReport::Ok {
            ok: true,
            verified_through: EVENTS,
            head_hash: head.hash
        }
    );
}

// ---------------------------------------------------------------------------------------
// Server-Sent Events
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct Sse {
    id: u64,
    event: String,
    data: Value,
}

/// An open event stream, read frame by frame.
struct EventStream {
    res: reqwest::Response,
    buffer: String,
}

impl EventStream {
    async fn open(app: &TestApp, query: &str, who: Person, last_event_id: Option<u64>) -> Self {
        let mut rb = app
            .client
            .get(format!("{}/v1/events/stream{query}", app.address))
            .bearer_auth(who.token(app));
        if let Some(id) = last_event_id {
            rb = rb.header("Last-Event-ID", id.to_string());
        }
        let res = rb.send().await.expect("stream request");
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        EventStream {
            res,
            buffer: String::new(),
        }
    }

    /// The next event (comments skipped), or None when none comes within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut event = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let (Some(id), Some(event), Some(data)) = (id, event, data) {
                    return Some(Sse { id, event, data });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.res.chunk()).await;
            match chunk {
                Err(_) => return None,
                Ok(c) => {
                    let c = c.expect("stream read").expect("the stream stays open");
                    self.buffer.push_str(std::str::from_utf8(&c).unwrap());
                }
            }
        }
    }

    async fn take(&mut self, n: usize) -> Vec<Sse> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(
                self.next(Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|| panic!("only {} of {n} events came", out.len())),
            );
        }
        out
    }
}

async fn event_stream_in_order_and_resumable(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let (web, _) = history(&app).await;
    let total = app.event_count().await;

    let mut stream = EventStream::open(&app, "?from=0", AUDITOR_ALL, None).await;
    let events = stream.take(total as usize).await;
    assert_eq!(
        events.iter().map(|e| e.id).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    for e in &events {
        assert_eq!(e.data["position"], e.id);
        assert_eq!(e.data["type"], json!(e.event));
        for field in ["stream", "payload", "metadata", "recorded_at"] {
            assert!(!e.data[field].is_null(), "{field}: {:?}", e.data);
        }
    }
    assert_eq!(events[0].event, "RolloutCreated");

    // Live: a new event arrives on the open stream.
    flow::record(&app, &web, SAM, flow::HEALTHY).await;
    let live = stream.take(1).await;
    assert_eq!(live[0].id, total + 1);
    assert_eq!(live[0].event, "ReadingsRecorded");
    drop(stream);

    // Resume after event 5: Last-Event-ID wins over `from`.
    let mut resumed = EventStream::open(&app, "?from=0", AUDITOR_ALL, Some(5)).await;
    let rest = resumed.take((total + 1 - 5) as usize).await;
    assert_eq!(
        rest.iter().map(|e| e.id).collect::<Vec<_>>(),
        (6..=total + 1).collect::<Vec<_>>()
    );
    assert!(resumed.next(Duration::from_millis(300)).await.is_none());

    // Without a position the stream starts at the head: only new events.
    let mut tail = EventStream::open(&app, "", AUDITOR_ALL, None).await;
    assert!(tail.next(Duration::from_millis(300)).await.is_none());
    flow::record(&app, &web, SAM, flow::HEALTHY).await;
    assert_eq!(tail.take(1).await[0].id, total + 2);

    // A Last-Event-ID that is not a position.
    let r = app
        .request(
            Method::GET,
            "/v1/events/stream",
            Some(&AUDITOR_ALL.token(&app)),
            None,
            &[("Last-Event-ID", "yesterday")],
        )
        .await;
    r.assert_problem(422, None);
}

async fn event_stream_shows_only_the_callers_teams(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let (web, api) = history(&app).await;
    let total = app.event_count().await;
    let all = EventStream::open(&app, "?from=0", AUDITOR_ALL, None)
        .await
        .take(total as usize)
        .await;
    let team_of = |e: &Sse| e.data["metadata"]["team"].as_str().unwrap().to_owned();
    let web_count = all.iter().filter(|e| team_of(e) == "web").count();
    let api_count = all.iter().filter(|e| team_of(e) == "api").count();
    assert!(web_count > 0 && api_count > 0);
    assert_eq!(web_count + api_count, total as usize);

    let mut viewer = EventStream::open(&app, "?from=0", VIC, None).await;
    let seen = viewer.take(web_count).await;
    assert!(seen.iter().all(|e| team_of(e) == "web"));
    assert!(seen
        .iter()
        .all(|e| e.data["stream"] == json!(format!("rollout-{web}"))));
    assert!(viewer.next(Duration::from_millis(300)).await.is_none());

    let mut other = EventStream::open(&app, "?from=0", OTTO, None).await;
    let seen = other.take(api_count).await;
    assert!(seen
        .iter()
        .all(|e| e.data["stream"] == json!(format!("rollout-{api}"))));
    assert!(other.next(Duration::from_millis(300)).await.is_none());
    // A web event committed now reaches the viewer, not the api team.
    flow::record(&app, &web, SAM, flow::HEALTHY).await;
    assert_eq!(viewer.take(1).await[0].id, total + 1);
    assert!(other.next(Duration::from_millis(500)).await.is_none());
}

async fn event_stream_ends_when_its_token_expires(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let mut short = app.mint_request("ada", &["auditor"], &["*"]);
    short.ttl_seconds = 2;
    let res = app
        .client
        .get(format!("{}/v1/events/stream", app.address))
        .bearer_auth(app.mint(short))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    // The body ends (with a comment saying why) at the token's exp, not at keep-alive.
    let body = tokio::time::timeout(Duration::from_secs(10), res.text())
        .await
        .expect("the stream ends within 10 s of a 2 s token")
        .unwrap();
    assert!(body.contains("token has expired"), "{body}");
}

async fn event_streams_are_limited_per_subject_and_in_total(kind: Backend) {
    let app = TestApp::spawn_with(
        kind,
        &[
            "--max-event-streams",
            "3",
            "--max-event-streams-per-subject",
            "2",
        ],
    )
    .await;
    let ada_1 = EventStream::open(&app, "", AUDITOR_ALL, None).await;
    let _ada_2 = EventStream::open(&app, "", AUDITOR_ALL, None).await;
    let refused = |who: Person| {
        let app = &app;
        async move {
            let r = app
                .request(
                    Method::GET,
                    "/v1/events/stream",
                    Some(&who.token(app)),
                    None,
                    &[],
                )
                .await;
            r.assert_problem(429, None);
            assert_eq!(r.header("retry-after"), Some("5"));
            r
        }
    };
    let r = refused(AUDITOR_ALL).await;
    assert!(
        r.body["detail"].as_str().unwrap().contains("subject"),
        "{:?}",
        r.body
    );
    let _vic = EventStream::open(&app, "", VIC, None).await;
    let r = refused(OTTO).await;
    assert!(
        r.body["detail"].as_str().unwrap().contains("server"),
        "{:?}",
        r.body
    );
    // A client that goes away gives its place back: the server notices at its next write,
    // when a write fails (the second keep-alive comment after it went, at the latest).
    drop(ada_1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let res = app
            .client
            .get(format!("{}/v1/events/stream", app.address))
            .bearer_auth(OTTO.token(&app))
            .send()
            .await
            .unwrap();
        if res.status().as_u16() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream's place never came back"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

both_backends!(
    export_ndjson_and_csv_verify_offline,
    tampered_and_truncated_exports_fail,
    verify_and_head_answers,
    whole_log_reads_need_auditor_of_every_team,
    large_export_is_streamed,
    event_stream_in_order_and_resumable,
    event_stream_shows_only_the_callers_teams,
    event_stream_ends_when_its_token_expires,
    event_streams_are_limited_per_subject_and_in_total,
);
