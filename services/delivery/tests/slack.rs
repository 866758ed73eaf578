//! Slack approvals: signed interactions only, linked identities only, every rule applied
//! (a self-approval click is refused with R2), and an approval recorded with `via: slack`.

mod support;

use hmac::Mac;
use rollgate_delivery::signature::SlackRefusal;
use rollgate_delivery::slack::{
    handle_click, link_user, parse_interaction, CommandRefusal, InteractionRefusal,
    RolloutCommands, SlackLink, APPROVE_ACTION,
};
use rollgate_domain::rollout::{decide, evolve, RolloutCommand, RolloutEvent, RolloutState};
use rollgate_domain::{Actor, Context, PolicySnapshot, Role, RolloutId, Rule, Team};
use rollgate_store::{
    read_whole_stream, BackendKind, EventData, EventStore, ExpectedVersion, StoreOptions,
};
use rollgate_testkit::TestDb;
use serde_json::{json, Value};
use std::sync::Arc;
use support::*;
use uuid::Uuid;

const SECRET: &[u8] = b"slack signing secret";

/// The write path as the server runs it: fold, decide with every rule, append with R12
/// metadata plus the caller's extras.
struct Direct {
    store: Arc<dyn EventStore>,
}

#[async_trait::async_trait]
impl RolloutCommands for Direct {
    async fn execute(
        &self,
        actor: &Actor,
        rollout: RolloutId,
        command: RolloutCommand,
        extra: Value,
    ) -> Result<String, CommandRefusal> {
        let stream = format!("rollout-{rollout}");
        let stored = read_whole_stream(self.store.as_ref(), &stream)
            .await
            .map_err(|e| CommandRefusal::Other(e.to_string()))?;
        let state = stored.iter().fold(RolloutState::default(), |s, e| {
            evolve(
                s,
                &RolloutEvent::from_stored(&e.event_type, e.schema_version, e.payload.clone())
                    .unwrap(),
            )
        });
        let team = state
            .rollout()
            .map(|r| r.team.clone())
            .ok_or(CommandRefusal::Domain(
                rollgate_domain::DomainError::RolloutNotFound,
            ))?;
        let ctx = Context {
            actor: actor.clone(),
            now: t0() + chrono::Duration::seconds(1000),
            policy: PolicySnapshot::default_for(&team),
        };
        let events = decide(&state, command, &ctx).map_err(CommandRefusal::Domain)?;
        let mut md = metadata(actor, team.as_str());
        for (k, v) in extra.as_object().unwrap() {
            md[k] = v.clone();
        }
        let data = events
            .iter()
            .map(|e| EventData {
                id: Uuid::new_v4(),
                event_type: e.event_type().to_owned(),
                schema_version: e.schema_version(),
                payload: e.payload(),
                metadata: md.clone(),
            })
            .collect();
        self.store
            .append(&stream, ExpectedVersion::Exact(stored.len() as u64), data)
            .await
            .map_err(|e| CommandRefusal::Other(e.to_string()))?;
        Ok("recorded".into())
    }
}

fn signed_body(user: &str, rollout: RolloutId, request: Uuid, ts: i64) -> (String, String, String) {
    let payload = json!({
        "type": "block_actions",
        "user": { "id": user },
        "response_url": "https://hooks.slack.com/actions/T1/2/3",
        "actions": [ { "action_id": APPROVE_ACTION, "value":
            json!({ "rollout_id": rollout.to_string(), "request_id": request }).to_string() } ]
    })
    .to_string();
    let body = format!(
        "payload={}",
        url::form_urlencoded::byte_serialize(payload.as_bytes()).collect::<String>()
    );
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    m.update(format!("v0:{ts}:{body}").as_bytes());
    (
        body,
        ts.to_string(),
        format!("v0={}", hex::encode(m.finalize().into_bytes())),
    )
}

fn link(slack: &str, who: &str, roles: &[Role]) -> SlackLink {
    SlackLink {
        slack_user_id: slack.into(),
        actor_id: rollgate_domain::ActorId::parse(who).unwrap(),
        roles: roles.iter().copied().collect(),
        team: Team::parse("web").unwrap(),
        linked_by: gus().id,
        at: chrono::Utc::now(),
    }
}

async fn slack_clicks_apply_every_rule(kind: BackendKind) {
    let db = TestDb::new(kind).await;
    let store = db.store(StoreOptions::default()).await;
    let direct = Direct {
        store: store.clone(),
    };
    let mut w = Writer::new(store.clone());
    let rollout = w.create("web").await;
    w.run(rollout, &rita(), RolloutCommand::Start).await;
    let request = Uuid::new_v4();
    w.run(
        rollout,
        &rita(),
        RolloutCommand::RequestAdvance {
            request_id: rollgate_domain::RequestId::new(request),
        },
    )
    .await;

    // Only a governance admin of the team links.
    let refused = link_user(
        store.as_ref(),
        &ann(),
        link("UANN", "ann", &[Role::Approver]),
        metadata(&ann(), "web"),
    )
    .await;
    assert!(refused.is_err());
    link_user(
        store.as_ref(),
        &gus(),
        link("UANN", "ann", &[Role::Approver]),
        metadata(&gus(), "web"),
    )
    .await
    .unwrap();
    link_user(
        store.as_ref(),
        &gus(),
        link("URITA", "rita", &[Role::Approver, Role::ReleaseManager]),
        metadata(&gus(), "web"),
    )
    .await
    .unwrap();

    let now = chrono::Utc::now();
    // Forged signature, stale timestamp: 401, nothing read.
    let (body, ts, sig) = signed_body("UANN", rollout, request, now.timestamp());
    assert_eq!(
        parse_interaction(b"forged", Some(&ts), Some(&sig), body.as_bytes(), now),
        Err(InteractionRefusal::Signature(SlackRefusal::BadSignature))
    );
    let (old_body, old_ts, old_sig) = signed_body("UANN", rollout, request, now.timestamp() - 301);
    assert_eq!(
        parse_interaction(
            SECRET,
            Some(&old_ts),
            Some(&old_sig),
            old_body.as_bytes(),
            now
        ),
        Err(InteractionRefusal::Signature(SlackRefusal::Stale))
    );

    let head = store.head().await.unwrap().position;
    // An unlinked Slack user: refused, nothing recorded.
    let (body, ts, sig) = signed_body("UNOBODY", rollout, request, now.timestamp());
    let click = parse_interaction(SECRET, Some(&ts), Some(&sig), body.as_bytes(), now).unwrap();
    let answer = handle_click(store.as_ref(), &direct, &click).await.unwrap();
    assert!(answer.ephemeral.unwrap().contains("not linked"));
    assert_eq!(store.head().await.unwrap().position, head);

    // The requester clicks Approve: refused with R2, ephemeral, nothing recorded.
    let (body, ts, sig) = signed_body("URITA", rollout, request, now.timestamp());
    let click = parse_interaction(SECRET, Some(&ts), Some(&sig), body.as_bytes(), now).unwrap();
    let answer = handle_click(store.as_ref(), &direct, &click).await.unwrap();
    assert_eq!(answer.rule, Some(Rule::R2));
    assert!(answer.ephemeral.as_deref().unwrap().contains("R2"));
    assert_eq!(answer.body()["response_type"], "ephemeral");
    assert_eq!(store.head().await.unwrap().position, head);

    // A linked approver: an approval event under the linked identity, via slack.
    let (body, ts, sig) = signed_body("UANN", rollout, request, now.timestamp());
    let click = parse_interaction(SECRET, Some(&ts), Some(&sig), body.as_bytes(), now).unwrap();
    let answer = handle_click(store.as_ref(), &direct, &click).await.unwrap();
    assert_eq!(answer.ephemeral, None);
    assert!(answer
        .replace_message
        .unwrap()
        .starts_with("approved by ann"));
    let events = read_whole_stream(store.as_ref(), &format!("rollout-{rollout}"))
        .await
        .unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.event_type, "AdvanceApproved");
    assert_eq!(last.payload["approver"], "ann");
    assert_eq!(last.metadata["via"], "slack");
    assert_eq!(last.metadata["actor"]["id"], "ann");
    // The same click again: R3, nothing more.
    let answer = handle_click(store.as_ref(), &direct, &click).await.unwrap();
    assert_eq!(answer.rule, Some(Rule::R3));
}

#[tokio::test]
async fn slack_clicks_sqlite() {
    slack_clicks_apply_every_rule(BackendKind::Sqlite).await;
}

#[tokio::test]
async fn slack_clicks_postgres() {
    slack_clicks_apply_every_rule(BackendKind::Postgres).await;
}

/// A fake Slack on 127.0.0.1: records every JSON body POSTed, by path.
async fn fake_slack() -> (String, Arc<std::sync::Mutex<Vec<(String, Value)>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen2.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).await.unwrap();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).await.unwrap();
                    let h = h.trim_end();
                    if h.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).await.unwrap();
                let v: Value = serde_json::from_slice(&body).unwrap();
                seen.lock().unwrap().push((path, v));
                let mut stream = reader.into_inner();
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (base, seen)
}

#[tokio::test]
async fn notifications_and_in_place_updates_go_through_the_outbox() {
    use rollgate_delivery::slack_notifier::{NotifierOptions, SlackNotifier};
    let db = TestDb::new(BackendKind::Sqlite).await;
    let store = db.store(StoreOptions::default()).await;
    let (base, seen) = fake_slack().await;
    let notifier = SlackNotifier::new(
        store.clone(),
        NotifierOptions {
            allowed_origin: Some(base.clone()),
            poll_interval: std::time::Duration::from_millis(100),
            retry_delay: std::time::Duration::from_millis(100),
            lease_ttl: std::time::Duration::from_millis(1500),
            ..NotifierOptions::new(&format!("{base}/services/T1/B1/x"))
        },
    )
    .unwrap()
    .spawn();
    // The notifier starts from the head: wait for its checkpoint before writing.
    eventually("the notifier checkpoint", || async {
        rollgate_delivery::db::checkpoint(&store.pool(), "slack-notifications")
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;
    let mut w = Writer::new(store.clone());
    let rollout = w.create("web").await;
    w.run(rollout, &rita(), RolloutCommand::Start).await;
    let request = Uuid::new_v4();
    w.run(
        rollout,
        &rita(),
        RolloutCommand::RequestAdvance {
            request_id: rollgate_domain::RequestId::new(request),
        },
    )
    .await;
    link_user(
        store.as_ref(),
        &gus(),
        link("UANN", "ann", &[Role::Approver]),
        metadata(&gus(), "web"),
    )
    .await
    .unwrap();
    let now = chrono::Utc::now();
    let payload = json!({
        "type": "block_actions",
        "user": { "id": "UANN" },
        "response_url": format!("{base}/actions/T1/1/respond"),
        "actions": [ { "action_id": APPROVE_ACTION, "value":
            json!({ "rollout_id": rollout.to_string(), "request_id": request }).to_string() } ]
    })
    .to_string();
    let body = format!(
        "payload={}",
        url::form_urlencoded::byte_serialize(payload.as_bytes()).collect::<String>()
    );
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    m.update(format!("v0:{}:{body}", now.timestamp()).as_bytes());
    let sig = format!("v0={}", hex::encode(m.finalize().into_bytes()));
    let click = parse_interaction(
        SECRET,
        Some(&now.timestamp().to_string()),
        Some(&sig),
        body.as_bytes(),
        now,
    )
    .unwrap();
    let direct = Direct {
        store: store.clone(),
    };
    handle_click(store.as_ref(), &direct, &click).await.unwrap();
    eventually("the in-place update", || async {
        seen.lock()
            .unwrap()
            .iter()
            .any(|(p, _)| p.starts_with("/actions/"))
            .then_some(())
    })
    .await;
    notifier.shutdown().await;
    let seen = seen.lock().unwrap().clone();
    let hook: Vec<&Value> = seen
        .iter()
        .filter(|(p, _)| p.starts_with("/services/"))
        .map(|(_, v)| v)
        .collect();
    // Started (no message), the request with buttons, the approval.
    assert_eq!(hook.len(), 2, "{hook:#?}");
    let buttons = hook[0]["blocks"][1]["elements"].as_array().unwrap();
    assert_eq!(buttons[0]["action_id"], APPROVE_ACTION);
    assert!(hook[0]["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .contains("0 of 1 approvals"));
    assert!(hook[1]["text"]
        .as_str()
        .unwrap()
        .contains("ann approved; 1 of 1 approvals"));
    let update = seen
        .iter()
        .find(|(p, _)| p.starts_with("/actions/"))
        .map(|(_, v)| v)
        .unwrap();
    assert_eq!(
        update,
        &json!({ "replace_original": true, "text": "approved by ann; 1 of 1 approvals" })
    );
}
