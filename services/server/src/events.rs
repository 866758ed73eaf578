//! Stream names and stored-event decoding, in one place: which stream holds a rollout or a
//! team's policy, and how a stored event is read back (upcast to its current schema).

use rollgate_domain::{PolicyEvent, RolloutEvent, RolloutId, Team};
use rollgate_store::RecordedEvent;
use serde_json::Value;

use crate::http::problem::Problem;

const ROLLOUT_PREFIX: &str = "rollout-";
const POLICY_PREFIX: &str = "policy-";

pub fn rollout_stream(id: &RolloutId) -> String {
    format!("{ROLLOUT_PREFIX}{id}")
}

pub fn policy_stream(team: &Team) -> String {
    format!("{POLICY_PREFIX}{team}")
}

/// The rollout a stream name belongs to, if it is a rollout stream.
pub fn rollout_of_stream(stream: &str) -> Option<RolloutId> {
    RolloutId::parse(stream.strip_prefix(ROLLOUT_PREFIX)?).ok()
}

fn undecodable(e: &RecordedEvent, err: impl std::fmt::Display) -> Problem {
    tracing::error!(position = e.position, error = %err, "undecodable stored event");
    Problem::internal()
}

/// Decodes (and upcasts) a stored rollout event; an undecodable one is a server fault.
pub fn decode_rollout(e: &RecordedEvent) -> Result<RolloutEvent, Problem> {
    RolloutEvent::from_stored(&e.event_type, e.schema_version, e.payload.clone())
        .map_err(|err| undecodable(e, err))
}

/// Decodes (and upcasts) a stored policy event; an undecodable one is a server fault.
pub fn decode_policy(e: &RecordedEvent) -> Result<PolicyEvent, Problem> {
    PolicyEvent::from_stored(&e.event_type, e.schema_version, e.payload.clone())
        .map_err(|err| undecodable(e, err))
}

/// The payload at its current schema version, by the stream it is in (the stored one when
/// the type is unknown to this build).
pub fn upcast(e: &RecordedEvent) -> (u32, Value) {
    let decoded = if e.stream.starts_with(ROLLOUT_PREFIX) {
        RolloutEvent::from_stored(&e.event_type, e.schema_version, e.payload.clone())
            .ok()
            .map(|d| (d.schema_version(), d.payload()))
    } else if e.stream.starts_with(POLICY_PREFIX) {
        PolicyEvent::from_stored(&e.event_type, e.schema_version, e.payload.clone())
            .ok()
            .map(|d| (d.schema_version(), d.payload()))
    } else {
        None
    };
    decoded.unwrap_or_else(|| (e.schema_version, e.payload.clone()))
}
