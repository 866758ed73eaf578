//! Slack approvals over HTTP (`rollgate serve --slack-signing-secret-file`): clicks are signed
//! as Slack signs them (`v0=` HMAC-SHA256 of `v0:{timestamp}:{body}`, the documented
//! block_actions payload of tests/fixtures/slack), a governance admin links Slack users to
//! rollgate identities, and a click is an ordinary approval with every rule applied.

use hmac_sha256::sign;
use reqwest::Method;
use rollgate_e2e::flow::{ok, request_advance, running_example, GINA};
use rollgate_e2e::{json, Reply, TestApp};
use rollgate_store::{BackendKind, Clock};
use serde_json::Value;

const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const FIXTURE: &str = include_str!("../fixtures/slack/block-actions-interaction.json");

/// HMAC-SHA256 from the `sha2` crate (RFC 2104), as Slack computes it.
mod hmac_sha256 {
    use sha2::{Digest, Sha256};

    pub fn sign(key: &[u8], message: &[u8]) -> String {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(message)
            .finalize();
        let outer = Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize();
        hex::encode(outer)
    }
}

fn body_for(user: &str, approve: bool, rollout: &str, request: &str) -> String {
    let mut v: Value = serde_json::from_str(FIXTURE).unwrap();
    v["user"]["id"] = json!(user);
    v["actions"][0]["action_id"] = json!(if approve {
        "rollgate_approve"
    } else {
        "rollgate_reject"
    });
    v["actions"][0]["value"] =
        json!(json!({"rollout_id": rollout, "request_id": request}).to_string());
    format!(
        "payload={}",
        url::form_urlencoded::byte_serialize(v.to_string().as_bytes()).collect::<String>()
    )
}

async fn click(app: &TestApp, body: &str, ts: i64, secret: &str) -> Reply {
    let sig = format!(
        "v0={}",
        sign(secret.as_bytes(), format!("v0:{ts}:{body}").as_bytes())
    );
    let ts = ts.to_string();
    app.request_bytes(
        Method::POST,
        "/v1/integrations/slack/interactions",
        None,
        Some("application/x-www-form-urlencoded"),
        body.as_bytes().to_vec(),
        &[
            ("x-slack-request-timestamp", &ts),
            ("x-slack-signature", &sig),
        ],
    )
    .await
}

async fn link(app: &TestApp, slack_user: &str, actor: &str, roles: &[&str]) {
    let r = ok(
        app,
        Method::PUT,
        &format!("/v1/integrations/slack/users/{slack_user}"),
        GINA,
        json!({"actor_id": actor, "roles": roles, "team": "web"}),
    )
    .await;
    r.assert_status(200);
}

#[tokio::test]
async fn slack_clicks_are_approvals_under_every_rule() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("slack-signing-secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let app = TestApp::spawn_with(
        BackendKind::Sqlite,
        &["--slack-signing-secret-file", secret_file.to_str().unwrap()],
    )
    .await;
    let id = running_example(&app).await;
    let rid = request_advance(&app, &id).await;
    let now = app.clock.now().timestamp();

    // Only a governance admin links Slack users.
    let denied = app
        .request(
            Method::PUT,
            "/v1/integrations/slack/users/UBOB",
            Some(&app.token("alice", &["release_manager"], &["web"])),
            Some(&json!({"actor_id": "bob", "roles": ["approver"], "team": "web"})),
            &[],
        )
        .await;
    denied.assert_problem(403, Some("permission"));
    link(&app, "UBOB", "bob", &["approver"]).await;
    link(&app, "UALICE", "alice", &["release_manager", "approver"]).await;

    // A forged signature and a stale timestamp: 401, nothing recorded.
    let body = body_for("UBOB", true, &id, &rid);
    let before = app.event_count().await;
    click(&app, &body, now, "forged-secret")
        .await
        .assert_problem(401, None);
    click(&app, &body, now - 301, SECRET)
        .await
        .assert_problem(401, None);
    assert_eq!(app.event_count().await, before);

    // An unlinked Slack user: a refusal, nothing recorded.
    let r = click(&app, &body_for("UNOBODY", true, &id, &rid), now, SECRET).await;
    r.assert_status(200);
    assert_eq!(r.body["response_type"], "ephemeral");
    assert!(r.body["text"].as_str().unwrap().contains("not linked"));
    assert_eq!(app.event_count().await, before);

    // The requester approving her own request: refused with R2.
    let r = click(&app, &body_for("UALICE", true, &id, &rid), now, SECRET).await;
    r.assert_status(200);
    assert_eq!(r.body["response_type"], "ephemeral", "{}", r.body);
    assert!(
        r.body["text"].as_str().unwrap().contains("R2"),
        "{}",
        r.body
    );
    assert_eq!(app.event_count().await, before);

    // A valid click: an approval by the linked identity, `via: slack`.
    let r = click(&app, &body, now, SECRET).await;
    r.assert_status(200);
    assert!(r.body.get("response_type").is_none(), "{}", r.body);
    let store = app.db.store(Default::default()).await;
    let events = store.read_all(before, 1000).await.unwrap();
    let approval = events
        .iter()
        .find(|e| e.event_type == "AdvanceApproved")
        .unwrap_or_else(|| panic!("no approval among {events:?}"));
    assert_eq!(approval.metadata["actor"]["id"], "bob");
    assert_eq!(approval.metadata["via"], "slack");
    assert_eq!(approval.metadata["slack_user_id"], "UBOB");
    assert_eq!(approval.stream, format!("rollout-{id}"));
}
