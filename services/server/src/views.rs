//! The API's response bodies, as their own types: the internal state can change without
//! changing the contract (api-spec/openapi.yaml).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rollgate_domain::rollout::Rollout;
use rollgate_store::chain::format_time;
use rollgate_store::RecordedEvent;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::command::Written;

/// What a write answers: the stream's new version, the positions it wrote, and the ids of
/// what it created (`rollout_id`, `request_id`, `team`...).
#[derive(Debug, Serialize)]
pub struct WriteReply<'a> {
    pub stream_version: u64,
    /// The last written position (what a read's `min_position` waits for).
    pub position: u64,
    pub first_position: u64,
    pub events: &'a [String],
    #[serde(flatten)]
    pub created: BTreeMap<&'static str, String>,
}

impl<'a> WriteReply<'a> {
    pub fn new(w: &'a Written, created: BTreeMap<&'static str, String>) -> Self {
        WriteReply {
            stream_version: w.stream_version,
            position: w.last_position,
            first_position: w.first_position,
            events: &w.event_types,
            created,
        }
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// `GET /v1/rollouts/{id}`: the client view of a rollout.
#[derive(Debug, Serialize)]
pub struct RolloutView<'a> {
    pub id: String,
    pub feature_key: &'a rollgate_domain::FeatureKey,
    pub title: &'a str,
    pub team: &'a rollgate_domain::Team,
    pub status: rollgate_domain::rollout::RolloutStatus,
    pub stage: Option<rollgate_domain::StageIndex>,
    pub stage_name: Option<&'a str>,
    pub exposure_percentage: rollgate_domain::Percentage,
    pub plan_revision: u32,
    pub plan: &'a rollgate_domain::Plan,
    pub readiness_signed: &'a BTreeMap<rollgate_domain::ReadinessKey, rollgate_domain::ActorId>,
    pub unsigned_readiness: Vec<&'a rollgate_domain::ReadinessKey>,
    pub open_request: Option<String>,
    pub requests:
        &'a BTreeMap<rollgate_domain::RequestId, rollgate_domain::rollout::AdvanceRequest>,
    pub deviations: &'a BTreeMap<rollgate_domain::DeviationId, rollgate_domain::rollout::Deviation>,
    pub stage_entered_at: Option<DateTime<Utc>>,
    pub created_by: &'a rollgate_domain::ActorId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: u64,
    pub as_of_position: Option<u64>,
}

impl<'a> RolloutView<'a> {
    pub fn new(r: &'a Rollout, as_of_position: Option<u64>) -> Self {
        RolloutView {
            id: r.id.to_string(),
            feature_key: &r.feature_key,
            title: &r.title,
            team: &r.team,
            status: r.status,
            stage: r.position,
            stage_name: r.current_stage().map(|s| s.name.as_str()),
            exposure_percentage: r.exposure(),
            plan_revision: r.plan_revision,
            plan: &r.plan,
            readiness_signed: &r.readiness_signed,
            unsigned_readiness: r.unsigned_items(),
            open_request: r.open_request.map(|x| x.to_string()),
            requests: &r.requests,
            deviations: &r.deviations,
            stage_entered_at: r.stage_entered_at,
            created_by: &r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            version: r.version,
            as_of_position,
        }
    }
}

/// One event as the API shows it (`GET /v1/rollouts/{id}/events`, the SSE stream): the
/// payload upcast to its current schema version.
#[derive(Debug, Serialize)]
pub struct EventView<'a> {
    pub position: u64,
    /// Only on the global stream (a rollout's events are all of its stream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<&'a str>,
    pub version: u64,
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: &'a str,
    pub schema_version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_schema_version: Option<u32>,
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub metadata: &'a Value,
    pub recorded_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<&'a str>,
}

impl<'a> EventView<'a> {
    /// The event as the global stream shows it.
    pub fn global(e: &'a RecordedEvent) -> Self {
        let (schema_version, payload) = crate::events::upcast(e);
        EventView {
            position: e.position,
            stream: Some(&e.stream),
            version: e.version,
            id: e.id,
            event_type: &e.event_type,
            schema_version,
            stored_schema_version: None,
            payload,
            summary: None,
            metadata: &e.metadata,
            recorded_at: format_time(&e.recorded_at),
            hash: None,
        }
    }

    /// The event as its rollout's event list shows it: with the stored schema version, a
    /// one-line summary and its chain hash.
    pub fn in_rollout(e: &'a RecordedEvent, decoded: &rollgate_domain::RolloutEvent) -> Self {
        EventView {
            position: e.position,
            stream: None,
            version: e.version,
            id: e.id,
            event_type: &e.event_type,
            schema_version: decoded.schema_version(),
            stored_schema_version: Some(e.schema_version),
            payload: decoded.payload(),
            summary: Some(decoded.summary()),
            metadata: &e.metadata,
            recorded_at: format_time(&e.recorded_at),
            hash: Some(&e.hash),
        }
    }
}

/// A page of items and the cursor of the next page.
#[derive(Debug, Serialize)]
pub struct ItemsPage<T: Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_id: Option<String>,
    pub items: T,
    pub next_cursor: Option<String>,
}
