//! Hostile input as table rows, against the real server: deeply nested JSON, huge arrays,
//! invalid UTF-8, NUL bytes, path traversal and SQL metacharacters in ids and query filters,
//! negative and enormous page sizes, over-long headers. Never a 5xx; a refusal is always
//! problem+json 4xx; nothing is written (the log's head is unchanged). Every row runs and
//! the failures are reported together.

use reqwest::Method;
use rollgate_e2e::flow::{self, Person, ALICE, BOT};
use rollgate_e2e::{both_backends, json, Backend, Reply, TestApp};

const AUDITOR_ALL: Person = Person {
    sub: "ada",
    roles: &["auditor"],
    teams: &["*"],
};

/// What a row must answer.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A problem+json 4xx.
    Refused,
    /// A problem+json 4xx, or 200 with an empty page (a filter that matches nothing).
    RefusedOrEmpty,
}

struct Row {
    name: String,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    who: Person,
    expect: Expect,
}

fn row(name: &str, method: Method, path: String, who: Person, expect: Expect) -> Row {
    Row {
        name: name.to_owned(),
        method,
        path,
        content_type: None,
        body: Vec::new(),
        headers: Vec::new(),
        who,
        expect,
    }
}

fn post(name: &str, path: String, body: Vec<u8>) -> Row {
    Row {
        content_type: Some("application/json"),
        body,
        ..row(name, Method::POST, path, ALICE, Expect::Refused)
    }
}

fn nested(depth: usize) -> Vec<u8> {
    let mut s = String::with_capacity(depth * 6 + 64);
    s.push_str(r#"{"audience":"internal","text":"#);
    for _ in 0..depth {
        s.push_str(r#"{"a":"#);
    }
    s.push('1');
    for _ in 0..depth {
        s.push('}');
    }
    s.push('}');
    s.into_bytes()
}

fn rows(id: &str) -> Vec<Row> {
    let note = format!("/v1/rollouts/{id}/notes");
    let metrics = format!("/v1/rollouts/{id}/metrics");
    let mut rows = vec![
        post("nested objects, depth 10000", note.clone(), nested(10_000)),
        post("nested arrays, depth 10000", "/v1/rollouts".into(), {
            let mut v = "[".repeat(10_000).into_bytes();
            v.extend("]".repeat(10_000).into_bytes());
            v
        }),
        post("nested plan, depth 500", "/v1/rollouts".into(), {
            let mut s = String::from(r#"{"feature_key":"x","title":"x","team":"web","plan":"#);
            s.push_str(&"{\"stages\":".repeat(500));
            s.push_str("[]");
            s.push_str(&"}".repeat(500));
            s.push('}');
            s.into_bytes()
        }),
        post(
            "huge array of readings (20000 numbers)",
            metrics.clone(),
            json!({ "readings": vec![1; 20_000] }).to_string().into_bytes(),
        ),
        post(
            "huge array as a note's text",
            note.clone(),
            json!({ "audience": "internal", "text": vec!["x"; 10_000] })
                .to_string()
                .into_bytes(),
        ),
        post(
            "body over the size limit",
            note.clone(),
            json!({ "audience": "internal", "text": "x".repeat(200_000) })
                .to_string()
                .into_bytes(),
        ),
        post(
            "invalid UTF-8 in a string",
            note.clone(),
            b"{\"audience\":\"internal\",\"text\":\"\xff\xfe\xfd\"}".to_vec(),
        ),
        post(
            "lone surrogate escape",
            note.clone(),
            br#"{"audience":"internal","text":"\ud800"}"#.to_vec(),
        ),
        post(
            "raw NUL byte in the body",
            note.clone(),
            b"{\"audience\":\"internal\",\"text\":\"a\x00b\"}".to_vec(),
        ),
        post(
            "escaped NUL in a note",
            note.clone(),
            br#"{"audience":"internal","text":"a\u0000b"}"#.to_vec(),
        ),
        post(
            "escaped NUL in a metric name",
            metrics.clone(),
            br#"{"readings":[{"metric":"error\u0000rate","value":0.1,"samples":1,"observed_at":"2026-03-01T09:00:00Z"}]}"#.to_vec(),
        ),
        post("escaped NUL in a rollout's title", "/v1/rollouts".into(), {
            let mut b = rollgate_e2e::example_create_body();
            b["title"] = json!("a\u{0}b");
            b["feature_key"] = json!("nul-title");
            b.to_string().into_bytes()
        }),
        post("truncated JSON", note.clone(), br#"{"audience":"int"#.to_vec()),
        post("empty body", note.clone(), Vec::new()),
        post("JSON null", note.clone(), b"null".to_vec()),
        post(
            "duplicate keys",
            note.clone(),
            br#"{"audience":"internal","text":"a","text":"b"}"#.to_vec(),
        ),
        post(
            "number too large",
            metrics.clone(),
            br#"{"readings":[{"metric":"error_rate","value":1e999,"samples":1,"observed_at":"2026-03-01T09:00:00Z"}]}"#.to_vec(),
        ),
        post(
            "negative samples",
            metrics.clone(),
            br#"{"readings":[{"metric":"error_rate","value":0.1,"samples":-1,"observed_at":"2026-03-01T09:00:00Z"}]}"#.to_vec(),
        ),
        post(
            "SQL in a metric name",
            metrics.clone(),
            json!({"readings":[{"metric":"x'); DROP TABLE events;--","value":0.1,"samples":1,"observed_at":"2026-03-01T09:00:00Z"}]}).to_string().into_bytes(),
        ),
        Row {
            content_type: Some("text/plain"),
            ..post(
                "wrong content type",
                note.clone(),
                br#"{"audience":"internal","text":"a"}"#.to_vec(),
            )
        },
    ];
    // Hostile ids in paths.
    for (name, bad) in [
        ("path traversal", "..%2F..%2Fetc%2Fpasswd"),
        ("dot segments", "..%2F.."),
        ("SQL in an id", "1'%20OR%20'1'%3D'1"),
        ("SQL comment in an id", "x%3B%20DELETE%20FROM%20events%3B--"),
        ("NUL in an id", "abc%00def"),
        ("invalid UTF-8 in an id", "%FF%FE"),
        ("over-long id", &"a".repeat(5000)),
    ] {
        rows.push(row(
            &format!("GET rollout: {name}"),
            Method::GET,
            format!("/v1/rollouts/{bad}"),
            ALICE,
            Expect::Refused,
        ));
        rows.push(post(
            &format!("POST note: {name}"),
            format!("/v1/rollouts/{bad}/notes"),
            br#"{"audience":"internal","text":"a"}"#.to_vec(),
        ));
        rows.push(post(
            &format!("POST approval: {name}"),
            format!("/v1/rollouts/{id}/advance-requests/{bad}/approvals"),
            br#"{"decision":"approve"}"#.to_vec(),
        ));
        rows.push(post(
            &format!("POST sign-off item: {name}"),
            format!("/v1/rollouts/{id}/readiness/{bad}/sign-off"),
            b"{}".to_vec(),
        ));
    }
    // Hostile filters and page sizes.
    for (name, query, expect) in [
        (
            "team with SQL",
            "/v1/rollouts?team=web'%20OR%201%3D1--",
            Expect::Refused,
        ),
        (
            "status unknown",
            "/v1/rollouts?status=running'--",
            Expect::Refused,
        ),
        (
            "feature key with SQL",
            "/v1/rollouts?feature_key=x'%20OR%20'1'%3D'1",
            Expect::RefusedOrEmpty,
        ),
        (
            "feature key with NUL",
            "/v1/rollouts?feature_key=a%00b",
            Expect::Refused,
        ),
        (
            "feature key invalid UTF-8",
            "/v1/rollouts?feature_key=%FF",
            Expect::RefusedOrEmpty,
        ),
        ("negative limit", "/v1/rollouts?limit=-1", Expect::Refused),
        ("zero limit", "/v1/rollouts?limit=0", Expect::Refused),
        (
            "enormous limit",
            "/v1/rollouts?limit=99999999999999999999999",
            Expect::Refused,
        ),
        (
            "limit over the maximum",
            "/v1/rollouts?limit=1001",
            Expect::Refused,
        ),
        (
            "fractional limit",
            "/v1/rollouts?limit=1.5",
            Expect::Refused,
        ),
        (
            "negative min_position",
            "/v1/rollouts?min_position=-5",
            Expect::Refused,
        ),
        (
            "enormous min_position",
            "/v1/rollouts?min_position=18446744073709551615",
            Expect::Refused,
        ),
        (
            "cursor with SQL",
            "/v1/rollouts?cursor='%20OR%201%3D1--",
            Expect::Refused,
        ),
        ("negative stage", "/v1/rollouts?stage=-1", Expect::Refused),
        ("unknown filter", "/v1/rollouts?drop=table", Expect::Refused),
        (
            "audit actor with SQL",
            "/v1/audit?actor=x'%20OR%20'1'%3D'1",
            Expect::RefusedOrEmpty,
        ),
        (
            "audit event type with SQL",
            "/v1/audit?event_type=%25'%20OR%201%3D1--",
            Expect::RefusedOrEmpty,
        ),
        (
            "audit rollout id with SQL",
            "/v1/audit?rollout_id='%20OR%201%3D1",
            Expect::Refused,
        ),
        (
            "audit negative limit",
            "/v1/audit?limit=-100",
            Expect::Refused,
        ),
        (
            "audit bad time",
            "/v1/audit?from=yesterday'--",
            Expect::Refused,
        ),
        (
            "decisions kind with SQL",
            "/v1/decisions?kind='%3B--",
            Expect::Refused,
        ),
        (
            "decisions enormous limit",
            "/v1/decisions?limit=4294967296",
            Expect::Refused,
        ),
        (
            "events negative limit",
            &format!("/v1/rollouts/{id}/events?limit=-1"),
            Expect::Refused,
        ),
        (
            "events cursor with SQL",
            &format!("/v1/rollouts/{id}/events?cursor=1%20OR%201%3D1"),
            Expect::Refused,
        ),
        (
            "export negative from",
            "/v1/audit/export?from_position=-1",
            Expect::Refused,
        ),
        (
            "verify bad hash",
            "/v1/audit/verify?position=1&hash='%20OR%201%3D1",
            Expect::Refused,
        ),
    ] {
        rows.push(row(
            &format!("GET {name}"),
            Method::GET,
            query.to_owned(),
            AUDITOR_ALL,
            expect,
        ));
    }
    // Over-long and hostile headers on a write.
    let ok_note = br#"{"audience":"internal","text":"header row"}"#.to_vec();
    for (name, header, value) in [
        (
            "Idempotency-Key of 10 kB",
            "idempotency-key",
            "k".repeat(10_000),
        ),
        ("If-Match of 10 kB", "if-match", "\"1".repeat(5_000)),
        (
            "If-Match with SQL",
            "if-match",
            "\"1' OR '1'='1\"".to_owned(),
        ),
        // Labels recorded on events: 1 to 128 visible ASCII characters, as the spec says.
        (
            "X-Request-Id of 129 characters",
            "x-request-id",
            "r".repeat(129),
        ),
        ("empty X-Request-Id", "x-request-id", String::new()),
        (
            "X-Correlation-Id with a space",
            "x-correlation-id",
            "a b".to_owned(),
        ),
        (
            "X-Causation-Id of 1 kB",
            "x-causation-id",
            "c".repeat(1_000),
        ),
    ] {
        let mut r = post(&format!("POST note: {name}"), note.clone(), ok_note.clone());
        r.headers.push((header, value));
        rows.push(r);
    }
    rows.push(Row {
        who: BOT,
        ..row(
            "bearer token of 100 kB",
            Method::GET,
            "/v1/rollouts".into(),
            ALICE,
            Expect::Refused,
        )
    });
    rows
}

fn check(row: &Row, r: &Reply) -> Option<String> {
    let status = r.status.as_u16();
    let problem = r.header("content-type") == Some("application/problem+json");
    let ok = match row.expect {
        Expect::Refused => (400..500).contains(&status) && problem,
        Expect::RefusedOrEmpty => {
            ((400..500).contains(&status) && problem)
                || (status == 200
                    && r.body["items"]
                        .as_array()
                        .is_some_and(|items| items.is_empty()))
        }
    };
    (!ok).then(|| {
        format!(
            "{}: {} {} -> {status} {:?} {}",
            row.name,
            row.method,
            &row.path[..row.path.len().min(120)],
            r.header("content-type"),
            r.body.to_string().chars().take(200).collect::<String>()
        )
    })
}

async fn hostile_input_is_refused(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = flow::running_example(&app).await;
    let rows = rows(&id);
    let before = app.event_count().await;
    let mut failures = Vec::new();
    let mut server_errors = 0usize;
    for row in &rows {
        let mut token = row.who.token(&app);
        if row.name == "bearer token of 100 kB" {
            token = format!("{token}{}", "A".repeat(100_000));
        }
        let headers: Vec<(&str, &str)> =
            row.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let url = format!("{}{}", app.address, row.path);
        let mut rb = app
            .client
            .request(row.method.clone(), &url)
            .bearer_auth(&token)
            .body(row.body.clone());
        if let Some(ct) = row.content_type {
            rb = rb.header("content-type", ct);
        }
        for (k, v) in &headers {
            rb = rb.header(*k, *v);
        }
        match rb.send().await {
            Ok(res) => {
                let status = res.status();
                let hdrs = res.headers().clone();
                let bytes = res.bytes().await.unwrap_or_default();
                let reply = Reply {
                    status,
                    headers: hdrs,
                    body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
                };
                if status.is_server_error() {
                    server_errors += 1;
                }
                if let Some(f) = check(row, &reply) {
                    failures.push(f);
                }
            }
            Err(e) => failures.push(format!("{}: no answer: {e}", row.name)),
        }
    }
    let after = app.event_count().await;
    if after != before {
        failures.push(format!("the log moved from {before} to {after}"));
    }
    // The server still answers normally.
    flow::record(&app, &id, BOT, flow::HEALTHY).await;
    eprintln!(
        "hostile_input {kind:?}: requests {}, 5xx {server_errors}, failures {}, events written {}",
        rows.len(),
        failures.len(),
        after - before
    );
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

both_backends!(hostile_input_is_refused);
