//! Webhooks over HTTP: a webhook registered through `POST /v1/webhooks` receives a scripted
//! rollout's events in log order, each signature verified by the independent Python
//! `standardwebhooks` package (the delivery crate's receiver,
//! services/delivery/tests/support/receiver.{py,rs}, `#[path]`-included; `ROLLGATE_PYTHON`).
//! The secret is answered once; a refused URL is a 422 naming `url`; another team's webhook
//! is a 404.

use std::time::{Duration, Instant};

use reqwest::Method;
use rollgate_e2e::flow::{ok, running_example, ALICE, AUDREY, GINA};
use rollgate_e2e::{json, TestApp};
use rollgate_store::BackendKind;

#[path = "../../services/delivery/tests/support/receiver.rs"]
mod receiver;
use receiver::Receiver;

#[tokio::test]
async fn a_registered_webhook_receives_the_rollout_in_order_signed() {
    let app = TestApp::spawn(BackendKind::Sqlite).await;
    let receiver = Receiver::start(0);
    let types = [
        "dev.rollgate.rollout.created",
        "dev.rollgate.rollout.readiness_signed_off",
        "dev.rollgate.rollout.ready",
        "dev.rollgate.rollout.started",
    ];
    // A refused URL names the field and writes nothing.
    let before = app.event_count().await;
    let refused = app
        .post(
            "/v1/webhooks",
            &GINA.token(&app),
            json!({"team": "web", "url": "http://169.254.169.254/latest", "event_types": types}),
        )
        .await;
    refused.assert_problem(422, None);
    assert!(refused.body.to_string().contains("url"), "{}", refused.body);
    assert_eq!(app.event_count().await, before);

    let created = ok(
        &app,
        Method::POST,
        "/v1/webhooks",
        GINA,
        json!({
            "team": "web",
            "url": receiver.url(),
            "event_types": types,
        }),
    )
    .await;
    created.assert_status(201);
    let secret = created.body["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"));
    let wid = created.body["id"].as_str().unwrap().to_owned();
    // The audit trail reads the registration (a summary, never the secret).
    let position = created.body["position"].as_u64().expect("position");
    let audit = app
        .get(
            &format!("/v1/audit?event_type=WebhookRegistered&min_position={position}"),
            &AUDREY.token(&app),
        )
        .await;
    audit.assert_status(200);
    let line = audit.body["items"][0]["summary"]
        .as_str()
        .unwrap_or_default();
    assert!(line.contains("registered webhook"), "{}", audit.body);
    assert!(!audit.body.to_string().contains("not readable"));
    assert!(!audit.body.to_string().contains(&secret));
    receiver.control(json!({"secrets": [secret]})).await;

    // Reads never show the secret; another team does not see the webhook.
    let got = app
        .get(&format!("/v1/webhooks/{wid}"), &GINA.token(&app))
        .await;
    got.assert_status(200);
    assert!(got.body.get("secret").is_none());
    assert!(!got.body.to_string().contains(&secret));
    let other = app.token("otto", &["governance_admin"], &["api"]);
    app.get(&format!("/v1/webhooks/{wid}"), &other)
        .await
        .assert_problem(404, Some("R11"));
    let listed = app.get("/v1/webhooks", &GINA.token(&app)).await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1));

    let id = running_example(&app).await;
    // Created, three sign-offs, ready, started: in log order.
    let expected = [
        "dev.rollgate.rollout.created",
        "dev.rollgate.rollout.readiness_signed_off",
        "dev.rollgate.rollout.readiness_signed_off",
        "dev.rollgate.rollout.readiness_signed_off",
        "dev.rollgate.rollout.ready",
        "dev.rollgate.rollout.started",
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let log = receiver.log().await;
        if log.len() >= expected.len() || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let got: Vec<&str> = log
        .iter()
        .map(|d| d["body"]["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(got, expected, "deliveries: {log:?}");
    for d in &log {
        assert_eq!(d["verified_with"], json!([0]), "signature: {d}");
        assert_eq!(d["body"]["specversion"], "1.0");
        assert_eq!(d["body"]["subject"], id.as_str());
        assert_eq!(d["body"]["id"], d["webhook_id"]);
    }
    // Every delivery answered 200, as the attempts show.
    let attempts = app
        .get(&format!("/v1/webhooks/{wid}/attempts"), &GINA.token(&app))
        .await;
    attempts.assert_status(200);
    assert!(attempts.body["items"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x["status"] == 200)));

    // Rotation answers a new secret once; a registration replayed under the same
    // Idempotency-Key never shows a second secret.
    let rotated = ok(
        &app,
        Method::POST,
        &format!("/v1/webhooks/{wid}/rotate-secret"),
        GINA,
        json!({}),
    )
    .await;
    assert!(rotated.body["secret"]
        .as_str()
        .is_some_and(|s| s.starts_with("whsec_") && s != secret));
    // The release manager may not manage webhooks.
    let denied = app
        .request(
            Method::POST,
            &format!("/v1/webhooks/{wid}/pause"),
            Some(&ALICE.token(&app)),
            Some(&json!({})),
            &[],
        )
        .await;
    denied.assert_problem(403, Some("permission"));
}
