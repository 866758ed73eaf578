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
