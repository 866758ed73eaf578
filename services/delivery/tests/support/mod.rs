//! Test support: a real webhook receiver ([`receiver`]: Python, verifying with the
//! `standardwebhooks` package), a writer that records rollout commands through the domain
//! and the store as the server does, and bounded waits.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rollgate_delivery::{EngineOptions, UrlPolicy};
use rollgate_domain::plan::{Plan, PlanSpec};
use rollgate_domain::rollout::{decide, evolve, RolloutCommand, RolloutState};
use rollgate_domain::{Actor, ActorId, Context, PolicySnapshot, Role, RolloutId, Team, TeamScope};
use rollgate_store::{EventData, EventStore, ExpectedVersion};
use serde_json::{json, Value};
use uuid::Uuid;

pub const PLAN: &str = include_str!("../fixtures/plan.json");

pub mod receiver;
#[allow(unused_imports)] // not every test file of the crate starts a receiver
pub use receiver::Receiver;

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Fast, loopback-allowing engine options for tests.
pub fn fast_options(instance: &str) -> EngineOptions {
    EngineOptions {
        instance_id: instance.to_owned(),
        request_timeout: Duration::from_millis(1000),
        connect_timeout: Duration::from_millis(500),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(300),
        max_attempts: 3,
        max_retry_after: Duration::from_millis(500),
        max_concurrent_requests: 8,
        lease_ttl: Duration::from_millis(1500),
        poll_interval: Duration::from_millis(100),
        batch_size: 50,
        url_policy: UrlPolicy {
            allow_private: false,
            allow_loopback: true,
        },
    }
}

/// Waits (bounded: 30 s, polling every 50 ms) until `check` answers `Some`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..600 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

pub fn person(id: &str, roles: &[Role], teams: &[&str]) -> Actor {
    Actor::new(
        ActorId::parse(id).unwrap(),
        roles.iter().copied(),
        TeamScope::parse(teams.iter().copied()).unwrap(),
    )
}

pub fn gus() -> Actor {
    person("gus", &[Role::GovernanceAdmin], &["web"])
}
pub fn rita() -> Actor {
    person("rita", &[Role::ReleaseManager], &["web", "api"])
}
pub fn ann() -> Actor {
    person("ann", &[Role::Approver], &["web", "api"])
}
pub fn sam() -> Actor {
    person("sam", &[Role::Sre], &["web", "api"])
}

pub fn metadata(actor: &Actor, team: &str) -> Value {
    json!({
        "actor": {
            "id": actor.id.as_str(),
            "roles": actor.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        },
        "team": team,
        "request_id": Uuid::new_v4().to_string(),
        "correlation_id": Uuid::new_v4().to_string(),
        "causation_id": null,
        "policy_version": 0,
    })
}

/// Writes rollout commands through the domain and the store, as the server does.
pub struct Writer {
    pub store: Arc<dyn EventStore>,
    rollouts: HashMap<RolloutId, (String, RolloutState)>,
    clock: i64,
}

impl Writer {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        Self {
            store,
            rollouts: HashMap::new(),
            clock: 0,
        }
    }

    pub async fn create(&mut self, team: &str) -> RolloutId {
        self.create_with_plan(team, PLAN).await
    }

    pub async fn create_with_plan(&mut self, team: &str, plan: &str) -> RolloutId {
        let id = RolloutId::new(Uuid::new_v4());
        let plan = Plan::parse(serde_json::from_str::<PlanSpec>(plan).unwrap()).unwrap();
        self.rollouts
            .insert(id, (team.to_owned(), RolloutState::default()));
        self.run(
            id,
            &rita(),
            RolloutCommand::Create {
                id,
                feature_key: rollgate_domain::FeatureKey::parse("one-click").unwrap(),
                title: "One-click checkout".into(),
                team: Team::parse(team).unwrap(),
                plan,
            },
        )
        .await;
        id
    }

    pub async fn run(&mut self, id: RolloutId, who: &Actor, cmd: RolloutCommand) {
        self.clock += 10;
        let (team, state) = self.rollouts.remove(&id).expect("known rollout");
        let ctx = Context {
            actor: who.clone(),
            now: t0() + chrono::Duration::seconds(self.clock),
            policy: PolicySnapshot::default_for(&Team::parse(&team).unwrap()),
        };
        let events =
            decide(&state, cmd.clone(), &ctx).unwrap_or_else(|e| panic!("{cmd:?} refused: {e}"));
        let state = events.iter().fold(state, evolve);
        let data = events
            .iter()
            .map(|e| EventData {
                id: Uuid::new_v4(),
                event_type: e.event_type().to_owned(),
                schema_version: e.schema_version(),
                payload: e.payload(),
                metadata: metadata(who, &team),
            })
            .collect();
        self.store
            .append(&format!("rollout-{id}"), ExpectedVersion::Any, data)
            .await
            .unwrap();
        self.rollouts.insert(id, (team, state));
    }

    /// Create, start, request, approve, advance to the second stage, roll back to the first.
    pub async fn story(&mut self, team: &str) -> RolloutId {
        let id = self.create(team).await;
        self.run(id, &rita(), RolloutCommand::Start).await;
        let req = rollgate_domain::RequestId::new(Uuid::new_v4());
        self.run(
            id,
            &rita(),
            RolloutCommand::RequestAdvance { request_id: req },
        )
        .await;
        self.run(
            id,
            &ann(),
            RolloutCommand::Approve {
                request_id: req,
                comment: Some("ship it".into()),
            },
        )
        .await;
        self.run(
            id,
            &rita(),
            RolloutCommand::Advance {
                request_id: req,
                inconclusive_override: None,
            },
        )
        .await;
        self.run(
            id,
            &sam(),
            RolloutCommand::Rollback {
                to_stage: Some(rollgate_domain::StageIndex::parse(0).unwrap()),
                reason: "error budget burning".into(),
            },
        )
        .await;
        id
    }
}

/// The events a webhook of `team` subscribed to `types` must receive after `after`, in order:
/// (event id, CloudEvents type).
pub async fn expected(
    store: &dyn EventStore,
    after: u64,
    team: &str,
    types: &[&str],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut from = after;
    loop {
        let page = store.read_all(from, 1000).await.unwrap();
        if page.is_empty() {
            return out;
        }
        for e in &page {
            from = e.position;
            let Some(ce) = rollgate_domain::webhook::cloudevent_type(&e.event_type) else {
                continue;
            };
            if e.metadata.get("team").and_then(Value::as_str) == Some(team) && types.contains(&ce) {
                out.push((e.id.to_string(), ce.to_owned()));
            }
        }
    }
}

/// Deliveries the receiver accepted (answered 2xx), as (webhook-id, type), first of each id.
pub fn accepted(log: &[Value]) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for entry in log {
        let answered = entry["answered"].as_u64().unwrap_or(0);
        if !(200..300).contains(&answered) {
            continue;
        }
        let id = entry["webhook_id"].as_str().unwrap_or_default().to_owned();
        if seen.insert(id.clone()) {
            out.push((
                id,
                entry["body"]["type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ));
        }
    }
    out
}
