//! A recorded event decoded once: the domain event plus the R12 envelope from its metadata.

use rollgate_domain::binding::BindingEvent;
use rollgate_domain::webhook::WebhookEvent;
use rollgate_domain::{DecodeError, PolicyEvent, RolloutEvent, StageIndex};
use rollgate_store::RecordedEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The domain meaning of a stored event.
#[derive(Clone, Debug)]
pub enum Body {
    Rollout(Box<RolloutEvent>),
    Policy(PolicyEvent),
    /// A gate binding's event (`binding-{uuid}` streams).
    Binding(BindingEvent),
    /// A webhook's event (`webhook-{uuid}` streams).
    Webhook(Box<WebhookEvent>),
    /// A GitHub or Slack integration record (deployment protection runs, Slack user links):
    /// audited with this summary, no read model of its own.
    Integration(String),
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
        let body = decode_body(event);
        let meta = &event.metadata;
        let rollout_id = event.stream.strip_prefix("rollout-").map(str::to_owned);
        let team = meta_str(meta, "team").or_else(|| match &body {
            Body::Rollout(e) => match e.as_ref() {
                RolloutEvent::RolloutCreated { team, .. } => Some(team.to_string()),
                _ => None,
            },
            Body::Policy(p) => Some(policy_team(p).to_owned()),
            Body::Binding(_) | Body::Integration(_) => None,
            Body::Webhook(w) => Some(w.team().to_string()),
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
            Body::Binding(e) => e.summary(),
            Body::Webhook(e) => e.summary(),
            Body::Integration(summary) => summary.clone(),
            Body::Undecodable(why) => format!("{} (not readable: {why})", self.event.event_type),
        }
    }

    /// The actor roles as JSON text.
    pub fn roles_json(&self) -> String {
        serde_json::to_string(&self.actor.roles).unwrap_or_else(|_| "[]".to_owned())
    }
}

/// The stored types of the GitHub and Slack integrations (written by `rollgate-delivery`).
pub const INTEGRATION_EVENT_TYPES: [&str; 5] = [
    "GitHubDeploymentProtectionRequested",
    "GitHubDeploymentProtectionCommented",
    "GitHubDeploymentProtectionDecided",
    "SlackUserLinked",
    "SlackUserUnlinked",
];

/// Tries each family of events in turn; the first that knows the type decides.
fn decode_body(event: &RecordedEvent) -> Body {
    let (t, v, p) = (
        event.event_type.as_str(),
        event.schema_version,
        &event.payload,
    );
    macro_rules! family {
        ($ty:ty, $wrap:expr) => {
            match <$ty>::from_stored(t, v, p.clone()) {
                Ok(e) => return $wrap(e),
                Err(DecodeError::UnknownEventType(_)) => {}
                Err(e) => return Body::Undecodable(e.to_string()),
            }
        };
    }
    family!(RolloutEvent, |e| Body::Rollout(Box::new(e)));
    family!(PolicyEvent, Body::Policy);
    family!(BindingEvent, Body::Binding);
    family!(WebhookEvent, |e| Body::Webhook(Box::new(e)));
    match integration_summary(t, p) {
        Some(Ok(summary)) => Body::Integration(summary),
        Some(Err(why)) => Body::Undecodable(why),
        None => Body::Undecodable(DecodeError::UnknownEventType(t.to_owned()).to_string()),
    }
}

/// The audit line of an integration record; `None` for a type that is not one.
fn integration_summary(event_type: &str, p: &Value) -> Option<Result<String, String>> {
    let s = |ptr: &str| p.pointer(ptr).and_then(Value::as_str);
    let need = |ptr: &str| s(ptr).ok_or_else(|| format!("{event_type}: {ptr} is missing"));
    let line = match event_type {
        "GitHubDeploymentProtectionRequested" => (|| {
            let bound = match s("/rollout_id") {
                Some(r) => format!("bound to rollout {r}"),
                None => "bound to no rollout".to_owned(),
            };
            Ok(format!(
                "GitHub asked to deploy {} at {} to environment {} ({bound})",
                need("/repository")?,
                need("/sha")?,
                need("/environment")?
            ))
        })(),
        "GitHubDeploymentProtectionCommented" => (|| {
            Ok(format!(
                "GitHub environment {} told: {}",
                need("/review/environment_name")?,
                need("/review/comment")?
            ))
        })(),
        "GitHubDeploymentProtectionDecided" => (|| {
            Ok(format!(
                "GitHub environment {} {}: {}",
                need("/review/environment_name")?,
                s("/review/state").unwrap_or("answered"),
                need("/review/comment")?
            ))
        })(),
        "SlackUserLinked" => (|| {
            Ok(format!(
                "{} linked Slack user {} to {} of team {}",
                need("/linked_by")?,
                need("/slack_user_id")?,
                need("/actor_id")?,
                need("/team")?
            ))
        })(),
        "SlackUserUnlinked" => Ok(format!(
            "Slack user {} unlinked",
            s("/slack_user_id").unwrap_or("(unknown)")
        )),
        _ => return None,
    };
    Some(line)
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
        Body::Binding(_) | Body::Webhook(_) | Body::Integration(_) | Body::Undecodable(_) => {
            return None
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recorded(stream: &str, event_type: &str, payload: Value, metadata: Value) -> RecordedEvent {
        RecordedEvent {
            position: 1,
            stream: stream.to_owned(),
            version: 1,
            id: uuid::Uuid::new_v4(),
            event_type: event_type.to_owned(),
            schema_version: 1,
            payload,
            metadata,
            recorded_at: chrono::Utc::now(),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// Every type the domain, the gates and the integrations write is routed to a decoder:
    /// none is answered "unknown event type" (a bad payload is another matter).
    #[test]
    fn every_event_type_that_can_be_written_is_known() {
        let all = RolloutEvent::event_types()
            .iter()
            .chain(PolicyEvent::event_types())
            .chain(BindingEvent::EVENT_TYPES.iter())
            .chain(WebhookEvent::EVENT_TYPES.iter())
            .chain(INTEGRATION_EVENT_TYPES.iter());
        let mut unknown = Vec::new();
        for t in all {
            let e = recorded("some-stream", t, json!({}), json!({}));
            let d = Decoded::new(&e);
            if let Body::Undecodable(why) = &d.body {
                if why.contains("unknown event type") {
                    unknown.push(*t);
                }
            }
        }
        assert!(
            unknown.is_empty(),
            "not readable by the projections: {unknown:?}"
        );
    }

    #[test]
    fn webhook_and_integration_records_have_audit_lines() {
        let webhook = WebhookEvent::WebhookPaused {
            webhook_id: rollgate_domain::webhook::WebhookId::new(uuid::Uuid::from_u128(7)),
            team: rollgate_domain::Team::parse("web").unwrap(),
            paused_by: rollgate_domain::ActorId::parse("gina").unwrap(),
            at: chrono::Utc::now(),
        };
        let e = recorded(
            "webhook-x",
            webhook.event_type(),
            webhook.payload(),
            json!({"actor": {"id": "gina", "roles": ["governance_admin"]}}),
        );
        let d = Decoded::new(&e);
        assert!(matches!(d.body, Body::Webhook(_)));
        assert_eq!(d.team.as_deref(), Some("web"));
        assert_eq!(d.summary(), webhook.summary());

        let requested = recorded(
            "github-delivery-1",
            "GitHubDeploymentProtectionRequested",
            json!({"delivery_id": "1", "repository": "octo/shop", "environment": "production",
                   "sha": "abc123", "ref": "refs/heads/main", "event": "deployment",
                   "deployment_callback_url": "https://api.github.com/x", "installation_id": 1,
                   "rollout_id": null, "at": "2026-03-01T09:00:00Z"}),
            json!({"team": null}),
        );
        assert_eq!(
            Decoded::new(&requested).summary(),
            "GitHub asked to deploy octo/shop at abc123 to environment production (bound to no rollout)"
        );
        let decided = recorded(
            "github-delivery-1",
            "GitHubDeploymentProtectionDecided",
            json!({"review": {"environment_name": "production", "state": "approved", "comment": "2 of 2 approvals"}}),
            json!({}),
        );
        assert_eq!(
            Decoded::new(&decided).summary(),
            "GitHub environment production approved: 2 of 2 approvals"
        );
        let linked = recorded(
            "slack-user-U1",
            "SlackUserLinked",
            json!({"slack_user_id": "U1", "actor_id": "bob", "roles": ["approver"], "team": "web",
                   "linked_by": "gina", "at": "2026-03-01T09:00:00Z"}),
            json!({}),
        );
        assert_eq!(
            Decoded::new(&linked).summary(),
            "gina linked Slack user U1 to bob of team web"
        );
        // A record missing what its summary needs is named, not guessed.
        let broken = recorded("slack-user-U1", "SlackUserLinked", json!({}), json!({}));
        assert!(Decoded::new(&broken).summary().contains("not readable"));
    }
}
