//! The delivery engine against real receivers on 127.0.0.1 that verify every signature with
//! the independent `standardwebhooks` package, on PostgreSQL and SQLite.

mod support;

use std::sync::Arc;

use rollgate_delivery::db;
use rollgate_delivery::engine::fold_stream;
use rollgate_delivery::{
    AdminCommand, DeliveryEngine, EngineHandle, RegisterRequest, SecretsKey, UrlPolicy,
    WebhookAdmin, WithSecret,
};
use rollgate_domain::webhook::{WebhookId, WebhookStatus};
use rollgate_store::{read_whole_stream, BackendKind, EventStore, StoreOptions};
use rollgate_testkit::TestDb;
use serde_json::{json, Value};
use support::*;

const TYPES: &[&str] = &[
    "dev.rollgate.rollout.created",
    "dev.rollgate.rollout.started",
    "dev.rollgate.rollout.advance_requested",
    "dev.rollgate.rollout.advance_approved",
    "dev.rollgate.rollout.stage_advanced",
    "dev.rollgate.rollout.rolled_back",
];

struct Setup {
    _db: TestDb,
    store: Arc<dyn EventStore>,
    key: SecretsKey,
    admin: WebhookAdmin,
}

async fn setup(kind: BackendKind) -> Setup {
    let db = TestDb::new(kind).await;
    let store = db.store(StoreOptions::default()).await;
    let key = SecretsKey::generate();
    let admin = WebhookAdmin::new(
        store.clone(),
        key.clone(),
        UrlPolicy {
            allow_private: false,
            allow_loopback: true,
        },
    );
    Setup {
        _db: db,
        store,
        key,
        admin,
    }
}

impl Setup {
    fn engine(&self, instance: &str) -> EngineHandle {
        DeliveryEngine::new(self.store.clone(), self.key.clone(), fast_options(instance))
            .expect("engine")
            .spawn()
    }

    async fn register(&self, url: &str, types: &[&str]) -> WithSecret {
        self.admin
            .register(
                &gus(),
                chrono::Utc::now(),
                WebhookId::new(uuid::Uuid::new_v4()),
                RegisterRequest {
                    team: "web".into(),
                    url: url.into(),
                    event_types: types.iter().map(|t| (*t).to_owned()).collect(),
                    description: None,
                },
                metadata(&gus(), "web"),
            )
            .await
            .expect("register")
    }

    async fn head(&self) -> u64 {
        self.store.head().await.unwrap().position
    }

    async fn delivered_through(&self, id: WebhookId) -> u64 {
        db::checkpoint(&self.store.pool(), &id.stream())
            .await
            .unwrap()
            .unwrap_or(0)
    }

    /// Waits until the webhook's checkpoint reaches the head of the log.
    async fn caught_up(&self, id: WebhookId) {
        let head = self.head().await;
        eventually("the checkpoint to reach the head", || async {
            (self.delivered_through(id).await >= head).then_some(())
        })
        .await;
    }

    async fn webhook_event_types(&self, id: WebhookId) -> Vec<String> {
        read_whole_stream(self.store.as_ref(), &id.stream())
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }
}

fn assert_all_verified(log: &[Value]) {
    for entry in log {
        assert!(
            !entry["verified_with"].as_array().unwrap().is_empty(),
            "a delivery failed standardwebhooks verification: {entry}"
        );
        assert_eq!(entry["content_type"], "application/cloudevents+json");
        assert_eq!(
            entry["webhook_id"], entry["body"]["id"],
            "webhook-id = event id"
        );
        assert_eq!(entry["body"]["specversion"], "1.0");
    }
}

async fn scripted_rollout_delivers_exactly_the_expected_events_in_order(kind: BackendKind) {
    let s = setup(kind).await;
    let receiver = Receiver::start(0);
    let engine = s.engine("a");
    let hook = s.register(&receiver.url(), TYPES).await;
    assert!(hook.secret.starts_with("whsec_"));
    receiver.control(json!({ "secrets": [hook.secret] })).await;
    let registered_at = hook.outcome.last_position;

    let mut w = Writer::new(s.store.clone());
    let rollout = w.story("web").await;
    w.story("api").await; // another team's rollout: never delivered here

    let want = expected(s.store.as_ref(), registered_at, "web", TYPES).await;
    let types: Vec<&str> = want.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "dev.rollgate.rollout.created",
            "dev.rollgate.rollout.started",
            "dev.rollgate.rollout.advance_requested",
            "dev.rollgate.rollout.advance_approved",
            "dev.rollgate.rollout.stage_advanced",
            "dev.rollgate.rollout.rolled_back",
        ]
    );
    s.caught_up(hook.webhook.id).await;
    let log = receiver.log().await;
    assert_all_verified(&log);
    let got: Vec<(String, String)> = log
        .iter()
        .map(|e| {
            (
                e["webhook_id"].as_str().unwrap().to_owned(),
                e["body"]["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got, want, "exactly the expected deliveries, in log order");

    // The body: CloudEvents attributes and the stage's informed parties from the plan.
    let advanced = &log[4]["body"];
    assert_eq!(advanced["subject"], rollout.to_string());
    assert_eq!(advanced["source"], format!("/v1/rollouts/{rollout}"));
    assert_eq!(advanced["data"]["team"], "web");
    assert_eq!(advanced["data"]["stage"], 1);
    assert_eq!(
        advanced["data"]["informed"],
        json!(["#announcements", "support-leads"])
    );
    assert_eq!(advanced["data"]["rollout"]["exposure_percentage"], 100.0);
    let started = &log[1]["body"];
    assert_eq!(
        started["data"]["informed"],
        json!(["#web-releases", "oncall-web"])
    );
    let rolled_back = &log[5]["body"];
    assert_eq!(
        rolled_back["data"]["informed"],
        json!(["#announcements", "support-leads"]),
        "a rollback informs the parties of the stage it leaves"
    );
    assert!(rolled_back["time"].as_str().unwrap().ends_with('Z'));
    engine.shutdown().await;
}

#[tokio::test]
async fn scripted_rollout_sqlite() {
    scripted_rollout_delivers_exactly_the_expected_events_in_order(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn scripted_rollout_postgres() {
    scripted_rollout_delivers_exactly_the_expected_events_in_order(BackendKind::Postgres).await;
}

/// The receiver refuses connections, then answers 500, times out, answers 503 with
/// Retry-After, and finally recovers: every event arrives, in order, none missing; the target
/// was marked failing and then recovered.
async fn a_failing_receiver_gets_every_event_in_order_once_it_recovers(kind: BackendKind) {
    let s = setup(kind).await;
    let port = free_port();
    let engine = s.engine("a");
    let hook = s
        .register(&format!("http://127.0.0.1:{port}/hook"), TYPES)
        .await;
    let id = hook.webhook.id;
    let mut w = Writer::new(s.store.clone());
    w.story("web").await;

    // Connection refused, several times.
    eventually("connection failures", || async {
        let attempts = db::recent_attempts(&s.store.pool(), &id.stream(), 100)
            .await
            .unwrap();
        (attempts.len() >= 4).then_some(())
    })
    .await;
    let attempts = db::recent_attempts(&s.store.pool(), &id.stream(), 100)
        .await
        .unwrap();
    assert!(attempts
        .iter()
        .all(|a| a.status.is_none() && a.error.as_deref().unwrap_or("").contains("connection")));
    // Marked failing (max_attempts = 3) with the last error, visible on GET.
    let view = eventually("the webhook to be marked failing", || async {
        let v = s.admin.get(&gus(), id).await.unwrap();
        v.failing.then_some(v)
    })
    .await;
    assert!(view.last_error.unwrap().contains("connection"));

    let receiver = Receiver::start_with(
        port,
        json!({
            "secrets": [hook.secret],
            "script": [
                { "status": 500 },
                { "status": 200, "sleep": 1.6 },
                { "status": 503, "retry_after": 0 },
                { "status": 500 }
            ]
        }),
    );
    w.story("web").await; // more events while it recovers
    s.caught_up(id).await;

    let want = expected(s.store.as_ref(), hook.outcome.last_position, "web", TYPES).await;
    let log = receiver.log().await;
    assert_all_verified(&log);
    assert_eq!(accepted(&log), want, "every event, in order, none missing");
    // Retries reuse the event id: an id seen twice is the same event.
    assert!(log.len() > want.len());
    let kinds = s.webhook_event_types(id).await;
    assert_eq!(
        kinds,
        ["WebhookRegistered", "WebhookFailing", "WebhookRecovered"]
    );
    assert!(!s.admin.get(&gus(), id).await.unwrap().failing);
    engine.shutdown().await;
}

#[tokio::test]
async fn failing_then_recovering_sqlite() {
    a_failing_receiver_gets_every_event_in_order_once_it_recovers(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn failing_then_recovering_postgres() {
    a_failing_receiver_gets_every_event_in_order_once_it_recovers(BackendKind::Postgres).await;
}

#[tokio::test]
async fn gone_disables_the_target() {
    let s = setup(BackendKind::Sqlite).await;
    let receiver = Receiver::start(0);
    let engine = s.engine("a");
    let hook = s.register(&receiver.url(), TYPES).await;
    receiver
        .control(json!({ "secrets": [hook.secret], "default": { "status": 410 } }))
        .await;
    let mut w = Writer::new(s.store.clone());
    w.story("web").await;
    let id = hook.webhook.id;
    eventually("the webhook to be disabled", || async {
        let v = s.admin.get(&gus(), id).await.unwrap();
        (v.status == WebhookStatus::Disabled).then_some(())
    })
    .await;
    assert_eq!(
        s.webhook_event_types(id).await,
        ["WebhookRegistered", "WebhookDisabled"]
    );
    // The lease is given up and nothing more is sent.
    eventually("the lease to be released", || async {
        db::lease_of(&s.store.pool(), &id.stream())
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    w.story("web").await;
    assert_eq!(receiver.log().await.len(), 1);
    // A resume enables it again and delivery goes on from where it stopped.
    receiver
        .control(json!({ "default": { "status": 200 } }))
        .await;
    s.admin
        .command(
            &gus(),
            chrono::Utc::now(),
            id,
            AdminCommand::Resume,
            metadata(&gus(), "web"),
        )
        .await
        .unwrap();
    s.caught_up(id).await;
    let want = expected(s.store.as_ref(), hook.outcome.last_position, "web", TYPES).await;
    assert_eq!(accepted(&receiver.log().await), want);
    engine.shutdown().await;
}

/// Two instances share the database: one delivers at a time (the lease); when it crashes its
/// lease expires and the other takes over; nothing is lost, duplicates carry the same id.
async fn one_instance_per_target_and_takeover_after_a_crash(kind: BackendKind) {
    let s = setup(kind).await;
    let receiver = Receiver::start(0);
    let a = s.engine("instance-a");
    let hook = s.register(&receiver.url(), TYPES).await;
    let id = hook.webhook.id;
    receiver.control(json!({ "secrets": [hook.secret] })).await;
    let mut w = Writer::new(s.store.clone());
    w.story("web").await;
    s.caught_up(id).await;
    let b = s.engine("instance-b");
    w.story("web").await;
    s.caught_up(id).await;
    let (owner, _) = db::lease_of(&s.store.pool(), &id.stream())
        .await
        .unwrap()
        .expect("a lease");
    assert_eq!(owner, "instance-a", "the first holder keeps the target");
    let log = receiver.log().await;
    assert_eq!(log.len(), 12, "each event delivered once while both run");

    // instance-a crashes (no clean release); instance-b takes over after the lease expires.
    a.abort();
    w.story("web").await;
    s.caught_up(id).await;
    let (owner, _) = db::lease_of(&s.store.pool(), &id.stream())
        .await
        .unwrap()
        .expect("a lease");
    assert_eq!(owner, "instance-b");
    let want = expected(s.store.as_ref(), hook.outcome.last_position, "web", TYPES).await;
    let log = receiver.log().await;
    assert_all_verified(&log);
    assert_eq!(accepted(&log), want);
    b.shutdown().await;
}

#[tokio::test]
async fn lease_and_takeover_sqlite() {
    one_instance_per_target_and_takeover_after_a_crash(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn lease_and_takeover_postgres() {
    one_instance_per_target_and_takeover_after_a_crash(BackendKind::Postgres).await;
}

#[tokio::test]
async fn redelivery_replays_from_a_position_and_rotation_signs_twice() {
    let s = setup(BackendKind::Sqlite).await;
    let receiver = Receiver::start(0);
    let engine = s.engine("a");
    let hook = s.register(&receiver.url(), TYPES).await;
    let id = hook.webhook.id;
    receiver.control(json!({ "secrets": [hook.secret] })).await;
    let mut w = Writer::new(s.store.clone());
    w.story("web").await;
    s.caught_up(id).await;
    let first = receiver.log().await;
    assert_eq!(first.len(), 6);

    // Rotation: the new secret signs, the old one too during the overlap.
    let rotated = s
        .admin
        .rotate(
            &gus(),
            chrono::Utc::now(),
            id,
            Some(3600),
            metadata(&gus(), "web"),
        )
        .await
        .unwrap();
    assert_ne!(rotated.secret, hook.secret);
    receiver
        .control(json!({ "secrets": [hook.secret, rotated.secret] }))
        .await;
    // Replay everything after the third delivered event.
    let third_position = {
        let events = rollgate_store::read_whole_stream(
            s.store.as_ref(),
            &format!("rollout-{}", first[2]["body"]["subject"].as_str().unwrap()),
        )
        .await
        .unwrap();
        events
            .iter()
            .find(|e| e.id.to_string() == first[2]["webhook_id"].as_str().unwrap())
            .unwrap()
            .position
    };
    s.admin
        .command(
            &gus(),
            chrono::Utc::now(),
            id,
            AdminCommand::Redeliver {
                after_position: third_position,
            },
            metadata(&gus(), "web"),
        )
        .await
        .unwrap();
    eventually("the replay", || async {
        (receiver.log().await.len() >= 9).then_some(())
    })
    .await;
    s.caught_up(id).await;
    let log = receiver.log().await;
    assert_eq!(
        log.len(),
        9,
        "exactly the three events after the position again"
    );
    let replayed: Vec<&Value> = log[6..].iter().map(|e| &e["webhook_id"]).collect();
    let originals: Vec<&Value> = first[3..].iter().map(|e| &e["webhook_id"]).collect();
    assert_eq!(replayed, originals, "same ids, same order");
    for entry in &log[6..] {
        assert_eq!(entry["signatures"], 2, "two signatures during the rotation");
        assert_eq!(entry["verified_with"], json!([0, 1]));
    }
    engine.shutdown().await;
}

/// A receiver that takes its time slows only its own target.
#[tokio::test]
async fn a_slow_receiver_does_not_hold_up_another_target() {
    let s = setup(BackendKind::Sqlite).await;
    let slow = Receiver::start(0);
    let fast = Receiver::start(0);
    let engine = s.engine("a");
    let slow_hook = s.register(&slow.url(), TYPES).await;
    let fast_hook = s.register(&fast.url(), TYPES).await;
    slow.control(
        json!({ "secrets": [slow_hook.secret], "default": { "status": 200, "sleep": 0.9 } }),
    )
    .await;
    fast.control(json!({ "secrets": [fast_hook.secret] })).await;
    let mut w = Writer::new(s.store.clone());
    w.story("web").await;
    s.caught_up(fast_hook.webhook.id).await;
    assert_eq!(fast.log().await.len(), 6);
    // The slow target needs at least 6 × 0.9 s; it cannot be done yet.
    assert!(s.delivered_through(slow_hook.webhook.id).await < s.head().await);
    s.caught_up(slow_hook.webhook.id).await;
    assert_eq!(accepted(&slow.log().await).len(), 6);
    engine.shutdown().await;
}

#[tokio::test]
async fn pausing_holds_deliveries_and_resuming_sends_them_in_order() {
    let s = setup(BackendKind::Sqlite).await;
    let receiver = Receiver::start(0);
    let engine = s.engine("a");
    let hook = s.register(&receiver.url(), TYPES).await;
    let id = hook.webhook.id;
    receiver.control(json!({ "secrets": [hook.secret] })).await;
    s.admin
        .command(
            &gus(),
            chrono::Utc::now(),
            id,
            AdminCommand::Pause,
            metadata(&gus(), "web"),
        )
        .await
        .unwrap();
    let mut w = Writer::new(s.store.clone());
    w.story("web").await;
    eventually("the engine to see the pause", || async {
        let state = fold_stream(s.store.as_ref(), &id.stream()).await.unwrap();
        (state.webhook().unwrap().status == WebhookStatus::Paused).then_some(())
    })
    .await;
    assert!(receiver.log().await.is_empty());
    s.admin
        .command(
            &gus(),
            chrono::Utc::now(),
            id,
            AdminCommand::Resume,
            metadata(&gus(), "web"),
        )
        .await
        .unwrap();
    s.caught_up(id).await;
    let want = expected(s.store.as_ref(), hook.outcome.last_position, "web", TYPES).await;
    assert_eq!(accepted(&receiver.log().await), want);
    engine.shutdown().await;
}

#[tokio::test]
async fn registration_refuses_metadata_addresses_and_never_stores_the_secret_in_plain() {
    let s = setup(BackendKind::Sqlite).await;
    let err = s
        .admin
        .register(
            &gus(),
            chrono::Utc::now(),
            WebhookId::new(uuid::Uuid::new_v4()),
            RegisterRequest {
                team: "web".into(),
                url: "http://169.254.169.254/latest/meta-data".into(),
                event_types: TYPES.iter().map(|t| (*t).to_owned()).collect(),
                description: None,
            },
            metadata(&gus(), "web"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, rollgate_delivery::AdminError::Url(_)),
        "{err}"
    );
    assert_eq!(s.head().await, 0, "nothing written");
    let hook = s.register("http://127.0.0.1:9/hook", TYPES).await;
    let key_part = hook.secret.trim_start_matches("whsec_");
    for e in s.store.read_all(0, 1000).await.unwrap() {
        let text = serde_json::to_string(&e.payload).unwrap();
        assert!(
            !text.contains(key_part),
            "the log holds the secret only sealed"
        );
    }
    // The same id again (a replayed Idempotency-Key): a conflict, never the secret again.
    let again = s
        .admin
        .register(
            &gus(),
            chrono::Utc::now(),
            hook.webhook.id,
            RegisterRequest {
                team: "web".into(),
                url: "http://127.0.0.1:9/hook".into(),
                event_types: TYPES.iter().map(|t| (*t).to_owned()).collect(),
                description: None,
            },
            metadata(&gus(), "web"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(again, rollgate_delivery::AdminError::Conflict),
        "{again}"
    );
    // Reads never show it.
    let view = serde_json::to_string(&s.admin.get(&gus(), hook.webhook.id).await.unwrap()).unwrap();
    assert!(!view.contains(key_part) && !view.contains("secret"));
    // Outside the team: not found (R11).
    let other = person("gail", &[rollgate_domain::Role::GovernanceAdmin], &["api"]);
    assert!(s.admin.get(&other, hook.webhook.id).await.is_err());
    assert!(s.admin.list(&other, None).await.unwrap().is_empty());
    assert_eq!(s.admin.list(&gus(), None).await.unwrap().len(), 1);
}
