//! A recorded event decoded once: the domain event plus the R12 envelope from its metadata.

use rollgate_domain::{PolicyEvent, RolloutEvent, StageIndex};
use rollgate_store::RecordedEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The domain meaning of a stored event.
#[derive(Clone, Debug)]
pub enum Body {
    Rollout(Box<RolloutEvent>),
    Policy(PolicyEvent),
    /// An event this build cannot read (unknown type or bad payload): it is still audited.
    Undecodable(String),
}

/// Who acted, as recorded in the event's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorRef {
    pub id: Option<String>,
    pub roles: Vec<String>,
}

/// One event with its envelope fields extracted.
#[derive(Clone, Debug)]
pub struct Decoded<'a> {
    pub event: &'a RecordedEvent,
    /// The uuid of a `rollout-{uuid}` stream.
    pub rollout_id: Option<String>,
    pub team: Option<String>,
    pub actor: ActorRef,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    /// The policy version in force: the event's own when it carries one, else the metadata's.
    pub policy_version: Option<i64>,
    pub body: Body,
}

fn meta_str(meta: &Value, key: &str) -> Option<String> {
    meta.get(key).and_then(Value::as_str).map(str::to_owned)
}

impl<'a> Decoded<'a> {
    pub fn new(event: &'a RecordedEvent) -> Self {
        let body = match RolloutEvent::from_stored(
            &event.event_type,
            event.schema_version,
            event.payload.clone(),
        ) {
            Ok(e) => Body::Rollout(Box::new(e)),
            Err(rollgate_domain::DecodeError::UnknownEventType(_)) => {
                match PolicyEvent::from_stored(
                    &event.event_type,
                    event.schema_version,
                    event.payload.clone(),
                ) {
                    Ok(e) => Body::Policy(e),
                    Err(e) => Body::Undecodable(e.to_string()),
                }
            }
            Err(e) => Body::Undecodable(e.to_string()),
        };
        let meta = &event.metadata;
        let rollout_id = event.stream.strip_prefix("rollout-").map(str::to_owned);
        let team = meta_str(meta, "team").or_else(|| match &body {
            Body::Rollout(e) => match e.as_ref() {
                RolloutEvent::RolloutCreated { team, .. } => Some(team.to_string()),
                _ => None,
            },
            Body::Policy(p) => Some(policy_team(p).to_owned()),
            Body::Undecodable(_) => event.stream.strip_prefix("policy-").map(str::to_owned),
        });
        let actor_meta = meta.get("actor");
        let actor = ActorRef {
            id: actor_meta
                .and_then(|a| a.get("id"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            roles: actor_meta
                .and_then(|a| a.get("roles"))
                .and_then(Value::as_array)
                .map(|rs| {
                    rs.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        };
        let policy_version = body_policy_version(&body)
            .or_else(|| meta.get("policy_version").and_then(Value::as_i64));
        Decoded {
            event,
            rollout_id,
            team,
            actor,
            request_id: meta_str(meta, "request_id"),
            correlation_id: meta_str(meta, "correlation_id"),
            policy_version,
            body,
        }
    }

    pub fn rollout_event(&self) -> Option<&RolloutEvent> {
        match &self.body {
            Body::Rollout(e) => Some(e),
            _ => None,
        }
    }

    /// The audit line.
    pub fn summary(&self) -> String {
        match &self.body {
            Body::Rollout(e) => e.summary(),
            Body::Policy(e) => e.summary(),
            Body::Undecodable(why) => format!("{} (not readable: {why})", self.event.event_type),
        }
    }

    /// The actor roles as JSON text.
    pub fn roles_json(&self) -> String {
        serde_json::to_string(&self.actor.roles).unwrap_or_else(|_| "[]".to_owned())
    }
}

fn policy_team(p: &PolicyEvent) -> &str {
    match p {
        PolicyEvent::PolicyPublished { team, .. }
        | PolicyEvent::FreezeDeclared { team, .. }
        | PolicyEvent::FreezeLifted { team, .. } => team.as_str(),
    }
}

fn body_policy_version(body: &Body) -> Option<i64> {
    let v = match body {
        Body::Rollout(e) => match e.as_ref() {
            RolloutEvent::RolloutStarted { policy_version, .. }
            | RolloutEvent::AdvanceRequested { policy_version, .. }
            | RolloutEvent::AdvanceApproved { policy_version, .. }
            | RolloutEvent::AdvanceRejected { policy_version, .. }
            | RolloutEvent::Advanced { policy_version, .. }
            | RolloutEvent::GuardrailBreached { policy_version, .. }
            | RolloutEvent::Paused { policy_version, .. }
            | RolloutEvent::Resumed { policy_version, .. }
            | RolloutEvent::RolledBack { policy_version, .. }
            | RolloutEvent::RolloutCompleted { policy_version, .. }
            | RolloutEvent::RolloutAborted { policy_version, .. }
            | RolloutEvent::DeviationRequested { policy_version, .. }
            | RolloutEvent::DeviationGranted { policy_version, .. }
            | RolloutEvent::DeviationDenied { policy_version, .. }
            | RolloutEvent::DecisionRecorded { policy_version, .. } => *policy_version,
            _ => return None,
        },
        Body::Policy(p) => match p {
            PolicyEvent::PolicyPublished { version, .. } => *version,
            PolicyEvent::FreezeDeclared { policy_version, .. }
            | PolicyEvent::FreezeLifted { policy_version, .. } => *policy_version,
        },
        Body::Undecodable(_) => return None,
    };
    i64::try_from(v).ok()
}

/// The stage an event concerns, when it names one: the target of requests and advances,
/// the stage left by a rollback, the stage of readings, breaches, deviations and decisions.
pub fn event_stage(e: &RolloutEvent) -> Option<StageIndex> {
    match e {
        RolloutEvent::RolloutStarted { stage, .. }
        | RolloutEvent::GuardrailBreached { stage, .. }
        | RolloutEvent::RolloutCompleted { stage, .. } => Some(*stage),
        RolloutEvent::AdvanceRequested { to_stage, .. }
        | RolloutEvent::Advanced { to_stage, .. } => Some(*to_stage),
        RolloutEvent::RolledBack { from_stage, .. } => *from_stage,
        RolloutEvent::ReadingsRecorded { stage, .. }
        | RolloutEvent::Resumed { stage, .. }
        | RolloutEvent::DeviationRequested { stage, .. }
        | RolloutEvent::DecisionRecorded { stage, .. }
        | RolloutEvent::NoteAdded { stage, .. } => *stage,
        _ => None,
    }
}
