//! The body of a delivery: a CloudEvents 1.0 event in structured JSON mode
//! (`Content-Type: application/cloudevents+json`).
//!
//! `id` is the stored event's id (stable across retries and redeliveries), `type` comes from
//! [`rollgate_domain::webhook::DELIVERABLE_EVENT_TYPES`], `source` is the API path of the
//! rollout (or policy), `subject` the rollout id (or team), `time` the recorded time. `data`
//! carries the event's payload, its place in the log, the actor, a summary of the rollout at
//! that event, and the informed parties of the stage concerned, taken from the plan.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use lru::LruCache;
use rollgate_domain::rollout::{evolve, RolloutEvent, RolloutState};
use rollgate_domain::webhook::cloudevent_type;
use rollgate_domain::StageIndex;
use rollgate_store::{EventStore, RecordedEvent, StoreError};
use serde_json::{json, Value};

/// The media type of structured CloudEvents JSON.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// The team an event belongs to: the R12 metadata, or the policy event's own.
pub fn team_of(event: &RecordedEvent) -> Option<String> {
    event
        .metadata
        .get("team")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            event
                .payload
                .get("team")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .or_else(|| event.stream.strip_prefix("policy-").map(str::to_owned))
}

/// Rollout states by stream, folded up to some version, shared by all targets.
pub struct RolloutCache {
    states: Mutex<LruCache<String, RolloutState>>,
}

impl Default for RolloutCache {
    fn default() -> Self {
        Self::new(1024)
    }
}

impl RolloutCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            states: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity.max(1)).expect("non-zero"),
            )),
        }
    }

    /// The rollout as of `version` of `stream` (that event included).
    pub async fn state_at(
        &self,
        store: &dyn EventStore,
        stream: &str,
        version: u64,
    ) -> Result<RolloutState, StoreError> {
        let cached = self
            .states
            .lock()
            .expect("rollout cache lock")
            .get(stream)
            .cloned();
        let mut state = match cached {
            Some(s) if version_of(&s) <= version => s,
            _ => RolloutState::default(),
        };
        let mut have = version_of(&state);
        while have < version {
            let page = store
                .read_stream(stream, have + 1, (version - have).min(1000) as usize)
                .await?;
            if page.is_empty() {
                break;
            }
            for e in &page {
                if e.version > version {
                    break;
                }
                if let Ok(event) =
                    RolloutEvent::from_stored(&e.event_type, e.schema_version, e.payload.clone())
                {
                    state = evolve(state, &event);
                }
                have = e.version;
            }
        }
        self.states
            .lock()
            .expect("rollout cache lock")
            .put(stream.to_owned(), state.clone());
        Ok(state)
    }
}

fn version_of(state: &RolloutState) -> u64 {
    state.rollout().map_or(0, |r| r.version)
}

/// The stage an event concerns, for its informed parties: the stage asked for by advance
/// requests and their decisions, the stage left by a rollback, otherwise the stage exposed
/// after the event.
fn stage_concerned(event: &RecordedEvent, state: &RolloutState) -> Option<StageIndex> {
    let rollout = state.rollout()?;
    let request_to_stage = || {
        event
            .payload
            .get("request_id")
            .and_then(Value::as_str)
            .and_then(|id| {
                rollout
                    .requests
                    .iter()
                    .find(|(rid, _)| rid.to_string() == id)
                    .map(|(_, r)| r.to_stage)
            })
    };
    match event.event_type.as_str() {
        "AdvanceRequested" | "AdvanceApproved" | "AdvanceRejected" | "AdvanceRequestWithdrawn" => {
            request_to_stage()
        }
        "RolledBack" => event
            .payload
            .get("from_stage")
            .and_then(Value::as_u64)
            .and_then(|i| StageIndex::parse(i as i64).ok()),
        _ => rollout.position,
    }
}

/// Builds the CloudEvent of a stored event; `None` when webhooks do not carry its type.
pub async fn build(
    store: &dyn EventStore,
    cache: &RolloutCache,
    event: &RecordedEvent,
) -> Result<Option<Value>, StoreError> {
    let Some(ce_type) = cloudevent_type(&event.event_type) else {
        return Ok(None);
    };
    let team = team_of(event);
    let mut data = json!({
        "position": event.position,
        "stream": event.stream,
        "version": event.version,
        "event_type": event.event_type,
        "team": team,
        "actor": event.metadata.get("actor").cloned().unwrap_or(Value::Null),
        "request_id": event.metadata.get("request_id").cloned().unwrap_or(Value::Null),
        "correlation_id": event.metadata.get("correlation_id").cloned().unwrap_or(Value::Null),
        "payload": event.payload,
    });
    let (source, subject) = if let Some(rollout_id) = event.stream.strip_prefix("rollout-") {
        let state = cache.state_at(store, &event.stream, event.version).await?;
        let stage = stage_concerned(event, &state);
        if let Some(r) = state.rollout() {
            let informed = stage
                .and_then(|s| r.plan.stage(s))
                .map(|s| s.informed.clone())
                .unwrap_or_default();
            data["rollout"] = json!({
                "id": rollout_id,
                "feature_key": r.feature_key,
                "title": r.title,
                "status": r.status,
                "stage": r.position,
                "stage_name": r.current_stage().map(|s| s.name.clone()),
                "exposure_percentage": r.exposure(),
            });
            data["stage"] = json!(stage);
            data["informed"] = json!(informed);
        }
        (format!("/v1/rollouts/{rollout_id}"), rollout_id.to_owned())
    } else {
        let team = team.clone().unwrap_or_default();
        (format!("/v1/policies/{team}"), team)
    };
    Ok(Some(json!({
        "specversion": "1.0",
        "id": event.id.to_string(),
        "source": source,
        "type": ce_type,
        "subject": subject,
        "time": event.recorded_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "datacontenttype": "application/json",
        "data": data,
    })))
}
