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
    /// Each criterion of the current stage with its last evaluation (empty at 0 %).
    pub criteria: Vec<CriterionView<'a>>,
}

/// One criterion of the current stage as `GET /v1/rollouts/{id}` shows it.
#[derive(Debug, Serialize)]
pub struct CriterionView<'a> {
    pub kind: rollgate_domain::CriterionKind,
    /// Its place in the stage's `success_criteria` or `rollback_criteria`.
    pub index: usize,
    pub metric: &'a rollgate_domain::MetricName,
    /// `prometheus` for a query criterion (rollgate evaluates it), else `posted`.
    pub source: rollgate_domain::guardrail::ReadingSource,
    /// The verdict on the last evaluation (inconclusive when there is none).
    pub verdict: rollgate_domain::Verdict,
    /// Why the verdict is inconclusive, when the evaluation said why.
    pub reason: Option<String>,
    pub last_evaluation: Option<LastEvaluationView<'a>>,
}

/// The last reading or evaluation a criterion was judged on.
#[derive(Debug, Serialize)]
pub struct LastEvaluationView<'a> {
    pub source: rollgate_domain::guardrail::ReadingSource,
    /// The instant the values stand for: the scheduled evaluation time for `prometheus`, the
    /// reading's `observed_at` for `posted`.
    pub evaluated_at: DateTime<Utc>,
    /// When rollgate recorded it.
    pub recorded_at: DateTime<Utc>,
    /// The queries as run (templates expanded); `prometheus` only.
    pub query: Option<&'a str>,
    pub samples_query: Option<&'a str>,
    pub baseline_query: Option<&'a str>,
    pub value: Option<f64>,
    pub samples: u64,
    /// For a baseline criterion: the baseline's value (its query's, else the plan's
    /// `baseline_metrics` figure) and samples.
    pub baseline_value: Option<f64>,
    pub baseline_samples: Option<u64>,
}

impl<'a> CriterionView<'a> {
    fn new(c: rollgate_domain::rollout::CriterionStatus<'a>) -> Self {
        use rollgate_domain::guardrail::ReadingSource;
        use rollgate_domain::rollout::LastObservation;
        let e = c.evaluation;
        let last_evaluation = c.last.map(|last| {
            let (source, evaluated_at, recorded_at, queries) = match last {
                LastObservation::Posted(m) => (
                    ReadingSource::Posted,
                    m.latest.reading.observed_at,
                    m.latest.recorded_at,
                    None,
                ),
                LastObservation::Prometheus(m) => (
                    ReadingSource::Prometheus,
                    m.latest.evaluated_at,
                    m.recorded_at,
                    Some(&m.latest),
                ),
            };
            LastEvaluationView {
                source,
                evaluated_at,
                recorded_at,
                query: queries.map(|q| q.query.as_str()),
                samples_query: queries.and_then(|q| q.samples_query.as_deref()),
                baseline_query: queries.and_then(|q| q.baseline_query.as_deref()),
                value: e.value,
                samples: e.samples,
                baseline_value: e.baseline_value,
                baseline_samples: e.baseline_samples,
            }
        });
        CriterionView {
            kind: c.kind,
            index: c.index,
            metric: &c.criterion.metric,
            source: if c.criterion.queries.is_some() {
                ReadingSource::Prometheus
            } else {
                ReadingSource::Posted
            },
            verdict: e.verdict,
            reason: e.reason,
            last_evaluation,
        }
    }
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
            criteria: r
                .criteria_status()
                .into_iter()
                .map(CriterionView::new)
                .collect(),
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
