//! GitHub deployment protection rules against a fake GitHub API on 127.0.0.1 that checks what
//! GitHub checks: the App JWT (RS256, verified with the App's public key; `iss`, `iat` in the
//! past, `exp` at most 10 minutes after `iat`) before issuing an installation token, and that
//! token before accepting a callback.

use std::sync::Arc;

use rollgate_delivery::github::{
    parse_request, record_request, GitHubApp, GitHubError, GitHubHeaders, Recorded, Review,
};
use rollgate_store::{read_whole_stream, BackendKind, StoreOptions};
use rollgate_testkit::TestDb;
use serde_json::{json, Value};

#[path = "support/fake_github.rs"]
mod fake_github;
use fake_github::{fake_github, keypair, FakeGitHub, APP_ID};

#[tokio::test]
async fn callbacks_are_sent_as_the_app_with_a_cached_installation_token() {
    let (private_pem, public_pem) = keypair();
    let fake = fake_github(public_pem).await;
    let app = GitHubApp::new(APP_ID, private_pem.as_bytes(), &fake.base).unwrap();
    let callback = format!(
        "{}/repos/octo-org/web/actions/runs/1234567890/deployment_protection_rule",
        fake.base
    );
    app.review(
        12_345_678,
        &callback,
        &Review::new(
            "production",
            None,
            "1 of 2 approvals: alice; waiting for one sre",
        ),
    )
    .await
    .unwrap();
    app.review(
        12_345_678,
        &callback,
        &Review::new("production", Some("approved"), "quorum met: alice, sam"),
    )
    .await
    .unwrap();
    {
        let seen = fake.seen.lock().unwrap();
        assert!(seen.refused.is_empty(), "{:?}", seen.refused);
        assert_eq!(seen.token_requests, 1, "the installation token is cached");
        assert_eq!(seen.callbacks.len(), 2);
        assert_eq!(
            seen.callbacks[0].1,
            json!({"environment_name": "production", "comment": "1 of 2 approvals: alice; waiting for one sre"})
        );
        assert_eq!(seen.callbacks[1].1["state"], "approved");
    }
    // A callback URL elsewhere than under the configured API is never called.
    let err = app
        .review(
            12_345_678,
            "http://169.254.169.254/repos/a/b/actions/runs/1/deployment_protection_rule",
            &Review::new("production", Some("approved"), "x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::ForeignCallback(_)));
}

#[tokio::test]
async fn an_app_key_github_does_not_know_gets_no_token() {
    let (_, public_pem) = keypair();
    let (other_private, _) = keypair();
    let fake = fake_github(public_pem).await;
    let app = GitHubApp::new(APP_ID, other_private.as_bytes(), &fake.base).unwrap();
    let callback = format!(
        "{}/repos/octo-org/web/actions/runs/1/deployment_protection_rule",
        fake.base
    );
    let err = app
        .review(
            1,
            &callback,
            &Review::new("production", Some("approved"), "x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GitHubError::Api(_)), "{err}");
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen.refused.len(), 1);
    assert!(seen.callbacks.is_empty());
}

async fn a_redelivered_webhook_is_recorded_once(kind: BackendKind) {
    let db = TestDb::new(kind).await;
    let store = db.store(StoreOptions::default()).await;
    let body =
        include_str!("../../../tests/fixtures/github/deployment-protection-rule-requested.json");
    let secret = b"webhook secret";
    let sign = |b: &[u8]| {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        m.update(b);
        format!("sha256={}", hex::encode(m.finalize().into_bytes()))
    };
    let headers = GitHubHeaders {
        event: Some("deployment_protection_rule".into()),
        delivery: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
        signature: Some(sign(body.as_bytes())),
    };
    let request = parse_request(secret, &headers, body.as_bytes()).unwrap();
    let rollout = uuid::Uuid::new_v4();
    let first = record_request(
        store.as_ref(),
        &request,
        Some(rollout),
        Some("web"),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert!(matches!(first, Recorded::New(_)));
    let again = record_request(
        store.as_ref(),
        &request,
        Some(rollout),
        Some("web"),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    assert_eq!(
        again,
        Recorded::Duplicate,
        "a redelivery binds nothing twice"
    );
    let events = read_whole_stream(
        store.as_ref(),
        "github-delivery-72d3162e-cc78-11e3-81ab-4c9367dc0958",
    )
    .await
    .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload["rollout_id"], rollout.to_string());
    assert_eq!(events[0].payload["repository"], "octo-org/web");
    // A forged signature is refused before anything is read or written.
    let forged = GitHubHeaders {
        signature: Some(sign(b"something else")),
        ..headers
    };
    assert!(parse_request(secret, &forged, body.as_bytes()).is_err());
    assert_eq!(store.head().await.unwrap().position, 1);
}

#[tokio::test]
async fn redelivered_webhook_sqlite() {
    a_redelivered_webhook_is_recorded_once(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn redelivered_webhook_postgres() {
    a_redelivered_webhook_is_recorded_once(BackendKind::Postgres).await;
}

mod support;

const QUORUM_PLAN: &str = r##"{
  "owner": "rita",
  "baseline_metrics": {},
  "stages": [
    { "name": "canary", "audience": { "percentage": 5 }, "min_soak_seconds": 0,
      "approvals": [ { "roles": ["approver"], "count": 1 } ] },
    { "name": "everyone", "audience": { "percentage": 100 }, "min_soak_seconds": 0,
      "approvals": [ { "roles": ["approver"], "count": 1 }, { "roles": ["sre"], "count": 1 } ] }
  ]
}"##;

fn request(
    fake: &FakeGitHub,
    delivery: &str,
    run: u64,
) -> rollgate_delivery::github::DeploymentProtectionRequest {
    rollgate_delivery::github::DeploymentProtectionRequest {
        delivery_id: delivery.to_owned(),
        repository: "octo-org/web".into(),
        environment: "production".into(),
        sha: "4d1fd8f0".into(),
        git_ref: "refs/heads/main".into(),
        event: "workflow_dispatch".into(),
        deployment_callback_url: format!(
            "{}/repos/octo-org/web/actions/runs/{run}/deployment_protection_rule",
            fake.base
        ),
        installation_id: 12_345_678,
    }
}

fn callbacks_of(fake: &FakeGitHub, run: u64) -> Vec<Value> {
    let needle = format!("/runs/{run}/");
    fake.seen
        .lock()
        .unwrap()
        .callbacks
        .iter()
        .filter(|(path, _)| path.contains(&needle))
        .map(|(_, v)| v.clone())
        .collect()
}

/// Progress comments while approvals come in, `approved` only once the quorum is met,
/// `rejected` after a rollback, `rejected` at once for a run no rollout is bound to.
async fn the_callback_follows_the_rollout(kind: BackendKind) {
    use rollgate_delivery::github_reporter::{GitHubReporter, ReporterOptions};
    use rollgate_domain::rollout::RolloutCommand;
    use support::{ann, eventually, rita, sam, Writer};

    let db = TestDb::new(kind).await;
    let store = db.store(StoreOptions::default()).await;
    let (private_pem, public_pem) = keypair();
    let fake = fake_github(public_pem).await;
    let app = Arc::new(GitHubApp::new(APP_ID, private_pem.as_bytes(), &fake.base).unwrap());
    let reporter = GitHubReporter::new(
        store.clone(),
        app,
        ReporterOptions {
            instance_id: "a".into(),
            lease_ttl: std::time::Duration::from_millis(1500),
            poll_interval: std::time::Duration::from_millis(100),
            ..Default::default()
        },
    )
    .spawn();
    let mut w = Writer::new(store.clone());
    let rollout = w.create_with_plan("web", QUORUM_PLAN).await;
    w.run(rollout, &rita(), RolloutCommand::Start).await;
    let bound = Some(rollout.to_string().parse().unwrap());
    record_request(
        store.as_ref(),
        &request(&fake, "d-1", 1),
        bound,
        Some("web"),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    let req = rollgate_domain::RequestId::new(uuid::Uuid::new_v4());
    w.run(
        rollout,
        &rita(),
        RolloutCommand::RequestAdvance { request_id: req },
    )
    .await;
    eventually("the first progress comment", || async {
        (callbacks_of(&fake, 1).len() == 1).then_some(())
    })
    .await;
    w.run(
        rollout,
        &ann(),
        RolloutCommand::Approve {
            request_id: req,
            comment: None,
        },
    )
    .await;
    eventually("the second progress comment", || async {
        (callbacks_of(&fake, 1).len() == 2).then_some(())
    })
    .await;
    w.run(
        rollout,
        &sam(),
        RolloutCommand::Approve {
            request_id: req,
            comment: None,
        },
    )
    .await;
    eventually("the approval", || async {
        (callbacks_of(&fake, 1).len() == 3).then_some(())
    })
    .await;
    let calls = callbacks_of(&fake, 1);
    assert_eq!(
        calls[0],
        json!({"environment_name": "production", "comment": "0 of 2 approvals: none yet; waiting for 1 approver, 1 sre"})
    );
    assert_eq!(
        calls[1],
        json!({"environment_name": "production", "comment": "1 of 2 approvals: ann; waiting for 1 sre"})
    );
    assert_eq!(
        calls[2]["state"], "approved",
        "approved only once the quorum is met"
    );

    // A second run waits; the rollout is rolled back: rejected.
    w.run(
        rollout,
        &rita(),
        RolloutCommand::Advance {
            request_id: req,
            inconclusive_override: None,
        },
    )
    .await;
    record_request(
        store.as_ref(),
        &request(&fake, "d-2", 2),
        bound,
        Some("web"),
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    w.run(
        rollout,
        &sam(),
        RolloutCommand::Rollback {
            to_stage: None,
            reason: "checkout errors".into(),
        },
    )
    .await;
    // No rollout bound: rejected at once.
    record_request(
        store.as_ref(),
        &request(&fake, "d-3", 3),
        None,
        None,
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    eventually("the rejections", || async {
        (callbacks_of(&fake, 2).len() == 1 && callbacks_of(&fake, 3).len() == 1).then_some(())
    })
    .await;
    assert_eq!(
        callbacks_of(&fake, 2)[0],
        json!({"environment_name": "production", "state": "rejected", "comment": "rolled back: checkout errors"})
    );
    assert_eq!(callbacks_of(&fake, 3)[0]["state"], "rejected");
    reporter.shutdown().await;
    // Nothing more for run 1 after its decision, nothing refused by the fake.
    assert_eq!(callbacks_of(&fake, 1).len(), 3);
    assert!(fake.seen.lock().unwrap().refused.is_empty());
}

#[tokio::test]
async fn callback_follows_the_rollout_sqlite() {
    the_callback_follows_the_rollout(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn callback_follows_the_rollout_postgres() {
    the_callback_follows_the_rollout(BackendKind::Postgres).await;
}
