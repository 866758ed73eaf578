//! `GET /v1/flags/flagd.json?team=T` over HTTP: the served file as flagd's HTTP sync sees
//! it (ETag, If-None-Match → 304, its `authHeader` bearer token), evaluated by the real
//! `@openfeature/flagd-core` with schema validation on (tests/js/flagd-check.mjs).

use std::path::Path;
use std::process::Command;

use reqwest::Method;
use rollgate_e2e::flow::{advance_example, ok, running_example, ALICE, BOT, OTTO, SAM, VIC};
use rollgate_e2e::{both_backends, Backend, TestApp};
use serde_json::{json, Value};

const PATH: &str = "/v1/flags/flagd.json?team=web";

/// What flagd's HTTP sync sends: `Authorization` from `authHeader`, and `If-None-Match`
/// with the last ETag once it has one.
async fn poll(app: &TestApp, etag: Option<&str>) -> (u16, Option<String>, Vec<u8>) {
    let mut rb = app
        .client
        .get(format!("{}{PATH}", app.address))
        .header("Authorization", format!("Bearer {}", BOT.token(app)))
        .header("Accept", "application/json");
    if let Some(e) = etag {
        rb = rb.header("If-None-Match", e);
    }
    let r = rb.send().await.expect("sent");
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, etag, r.bytes().await.unwrap().to_vec())
}

/// Evaluates a served file with flagd-core: the report of tests/js/flagd-check.mjs.
fn evaluate(file: &[u8], cohorts: &[&str]) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.json");
    std::fs::write(&path, file).unwrap();
    let out = Command::new(rollgate_testkit::tools::node())
        .arg(root.join("tests/js/flagd-check.mjs"))
        .arg(rollgate_testkit::tools::node_modules())
        .arg(&path)
        .arg(root.join("tests/fixtures/flagd/fractional-example.json"))
        .args(cohorts)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "checker failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("checker report")
}

fn share_on(report: &Value, key: &str) -> f64 {
    assert_eq!(report["loaded"], true, "{report}");
    let f = &report["flags"][key];
    assert_eq!(f["errors"], 0, "{f}");
    f["on"].as_f64().unwrap() / 100.0
}

async fn served_file_follows_the_rollout(kind: Backend) {
    let app = TestApp::spawn(kind).await;
    let id = running_example(&app).await;
    let key = "checkout-one-click";

    // stage 0 (internal): 0 % plus the employees cohort
    let (status, etag, body) = poll(&app, None).await;
    assert_eq!(status, 200);
    let etag = etag.expect("an ETag");
    let report = evaluate(&body, &["employees", "beta-opt-in"]);
    assert_eq!(share_on(&report, key), 0.0);
    assert_eq!(report["flags"][key]["cohorts"]["employees"]["on"], 100);
    assert_eq!(report["flags"][key]["cohorts"]["beta-opt-in"]["on"], 0);

    // unchanged: 304 with no body
    let (status, again, body) = poll(&app, Some(&etag)).await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    assert_eq!(again.as_deref(), Some(etag.as_str()));

    // stage 1 (beta-5): 5 % ± 1 and both cohorts
    advance_example(&app, &id, 0).await;
    let (status, changed, body) = poll(&app, Some(&etag)).await;
    assert_eq!(status, 200);
    assert_ne!(changed.as_deref(), Some(etag.as_str()));
    let report = evaluate(&body, &["employees", "beta-opt-in"]);
    let on = share_on(&report, key);
    assert!((on - 5.0).abs() <= 1.0, "{on} % on at stage 1");
    assert_eq!(report["flags"][key]["cohorts"]["beta-opt-in"]["on"], 100);

    // a rollback to 0 %: nobody
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/rollback"),
        SAM,
        json!({"reason": "error budget"}),
    )
    .await;
    let (status, _, body) = poll(&app, None).await;
    assert_eq!(status, 200);
    let report = evaluate(&body, &["employees", "beta-opt-in"]);
    assert_eq!(share_on(&report, key), 0.0);
    assert_eq!(report["flags"][key]["cohorts"]["employees"]["on"], 0);

    // another team's file is not found; any role of the team may read it
    app.refused(Method::GET, PATH, Some(&OTTO.token(&app)), None, 404, None)
        .await;
    app.refused(Method::GET, PATH, None, None, 401, None).await;
    for who in [ALICE, VIC] {
        app.get(PATH, &who.token(&app)).await.assert_status(200);
    }
}

both_backends!(served_file_follows_the_rollout);
