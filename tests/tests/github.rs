//! GitHub deployment protection rules over HTTP (`rollgate serve --github-app-id ...`): the
//! webhook is checked by `X-Hub-Signature-256` (401, nothing recorded, when it does not
//! match), bound to the rollout whose gate binding names the repository (without case) and
//! environment (none once the binding is revoked), recorded once per `X-GitHub-Delivery`,
//! and answered later through the outbox to a fake GitHub API on 127.0.0.1 that checks what
//! GitHub checks (the App JWT against the App's public key before issuing an installation
//! token, that token before taking a callback).
//! The request body is GitHub's documented payload (tests/fixtures/github).

use std::time::{Duration, Instant};

use reqwest::Method;
use rollgate_e2e::flow::{
    approve, ok, record, request_advance, running_example, BOB, BOT, CAROL, EXAMPLE_SOAK, GINA,
    HEALTHY, SAM,
};
use rollgate_e2e::{json, Reply, TestApp};
use rollgate_store::BackendKind;
use serde_json::Value;

#[path = "../../services/delivery/tests/support/fake_github.rs"]
mod fake_github;
use fake_github::{fake_github, keypair, FakeGitHub, APP_ID};

const WEBHOOK_SECRET: &str = "It's a Secret to Everybody";
const FIXTURE: &str = include_str!("../fixtures/github/deployment-protection-rule-requested.json");

/// `X-Hub-Signature-256` as GitHub computes it (HMAC-SHA256, RFC 2104, from `sha2`).
fn hub_signature(key: &[u8], body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(body)
        .finalize();
    let outer = Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize();
    format!("sha256={}", hex::encode(outer))
}

async fn deliver(app: &TestApp, delivery: &str, body: &str, signature: &str) -> Reply {
    app.request_bytes(
        Method::POST,
        "/v1/integrations/github/webhook",
        None,
        Some("application/json"),
        body.as_bytes().to_vec(),
        &[
            ("x-github-event", "deployment_protection_rule"),
            ("x-github-delivery", delivery),
            ("x-hub-signature-256", signature),
        ],
    )
    .await
}

fn callbacks(fake: &FakeGitHub) -> Vec<Value> {
    fake.seen
        .lock()
        .unwrap()
        .callbacks
        .iter()
        .map(|(_, v)| v.clone())
        .collect()
}

async fn wait_for(fake: &FakeGitHub, what: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = callbacks(fake);
        if what(&seen) || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn github_runs_are_approved_at_the_quorum_and_rejected_on_rollback() {
    let (private_pem, public_pem) = keypair();
    let fake = fake_github(public_pem).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("app.pem");
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&key_file, private_pem).unwrap();
    std::fs::write(&secret_file, WEBHOOK_SECRET).unwrap();
    let app = TestApp::spawn_with(
        BackendKind::Sqlite,
        &[
            "--github-app-id",
            APP_ID,
            "--github-private-key-file",
            key_file.to_str().unwrap(),
            "--github-webhook-secret-file",
            secret_file.to_str().unwrap(),
            "--github-api-url",
            &fake.base,
        ],
    )
    .await;
    let id = running_example(&app).await;
    let binding = ok(
        &app,
        Method::POST,
        "/v1/bindings",
        GINA,
        json!({"rollout_id": id, "target": {"kind": "github_environment",
               "repository": "octo-org/web", "environment": "production"}}),
    )
    .await;
    binding.assert_status(201);
    let binding_id = binding.body["binding_id"]
        .as_str()
        .expect("binding_id")
        .to_owned();

    let mut payload: Value = serde_json::from_str(FIXTURE).unwrap();
    payload["deployment_callback_url"] = json!(format!(
        "{}/repos/octo-org/web/actions/runs/1234567890/deployment_protection_rule",
        fake.base
    ));
    let body = payload.to_string();

    // A bad signature: 401, nothing recorded.
    let before = app.event_count().await;
    deliver(
        &app,
        "d-1",
        &body,
        &hub_signature(b"wrong secret", body.as_bytes()),
    )
    .await
    .assert_problem(401, None);
    assert_eq!(app.event_count().await, before);

    // Recorded once and bound to the rollout; the redelivery records nothing.
    let signature = hub_signature(WEBHOOK_SECRET.as_bytes(), body.as_bytes());
    let r = deliver(&app, "d-1", &body, &signature).await;
    r.assert_status(202);
    assert_eq!(r.body["status"], "recorded");
    assert_eq!(r.body["rollout_id"], id.as_str());
    let after = app.event_count().await;
    assert_eq!(after, before + 1);
    let again = deliver(&app, "d-1", &body, &signature).await;
    again.assert_status(202);
    assert_eq!(again.body["status"], "duplicate");

    // Towards stage 1: bob, carol and sam must approve.
    record(&app, &id, BOT, HEALTHY).await;
    app.advance_clock(chrono::Duration::seconds(EXAMPLE_SOAK[0]));
    let rid = request_advance(&app, &id).await;
    approve(&app, &id, &rid, BOB).await;
    approve(&app, &id, &rid, CAROL).await;
    let early = wait_for(&fake, |c| c.len() >= 2).await;
    assert!(!early.is_empty(), "no progress comment reached GitHub");
    assert!(
        early.iter().all(|c| c.get("state").is_none()),
        "decided before the quorum: {early:?}"
    );
    assert!(early.iter().all(|c| c["environment_name"] == "production"));
    approve(&app, &id, &rid, SAM).await;
    let all = wait_for(&fake, |c| c.iter().any(|x| x["state"] == "approved")).await;
    let approved: Vec<&Value> = all.iter().filter(|x| x["state"] == "approved").collect();
    assert_eq!(approved.len(), 1, "callbacks: {all:?}");
    assert!(
        approved[0]["comment"].as_str().unwrap().contains("sam"),
        "{all:?}"
    );

    // A second run of the workflow, then a rollback: GitHub is told `rejected`.
    let r = deliver(&app, "d-2", &body, &signature).await;
    assert_eq!(r.body["status"], "recorded", "{}", r.body);
    ok(
        &app,
        Method::POST,
        &format!("/v1/rollouts/{id}/rollback"),
        SAM,
        json!({"reason": "error budget burning"}),
    )
    .await;
    let all = wait_for(&fake, |c| c.iter().any(|x| x["state"] == "rejected")).await;
    let rejected: Vec<&Value> = all.iter().filter(|x| x["state"] == "rejected").collect();
    assert_eq!(rejected.len(), 1, "callbacks: {all:?}");
    assert!(
        rejected[0]["comment"]
            .as_str()
            .unwrap()
            .contains("rolled back"),
        "{all:?}"
    );
    assert!(fake.seen.lock().unwrap().refused.is_empty());

    // The repository is compared without case (the binding's look-up index keeps it in
    // lower case); once the binding is revoked, a run is bound to no rollout.
    let mut shouted = payload.clone();
    shouted["repository"]["full_name"] = json!("Octo-Org/WEB");
    let shouted = shouted.to_string();
    let shouted_signature = hub_signature(WEBHOOK_SECRET.as_bytes(), shouted.as_bytes());
    let r = deliver(&app, "d-3", &shouted, &shouted_signature).await;
    assert_eq!(r.body["status"], "recorded", "{}", r.body);
    assert_eq!(r.body["rollout_id"], id.as_str());
    ok(
        &app,
        Method::POST,
        &format!("/v1/bindings/{binding_id}/revoke"),
        GINA,
        json!({"reason": "the environment moved"}),
    )
    .await;
    let r = deliver(&app, "d-4", &body, &signature).await;
    assert_eq!(r.body["status"], "recorded", "{}", r.body);
    assert!(r.body["rollout_id"].is_null(), "{}", r.body);
}
