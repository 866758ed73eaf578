//! Rollout events (past tense), their stored form and their one-line summaries.
//!
//! Every event carries `at` (from `Context::now`) and, where a person acted,
//! their id; decision-type events also carry the `policy_version` and, where
//! the decision depends on it, the `plan_revision`. The store's envelope adds
//! the rest of R12 (roles, team, request and correlation ids).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Rule, UnmetPrecondition};
use crate::guardrail::{Evaluation, QueryEvaluation, Reading, ReadingSource};
use crate::plan::{Criterion, OnBreach, Plan};
use crate::stored::{self, DecodeError};
use crate::values::{
    ActorId, AnnotationId, DecisionId, DeviationId, FeatureKey, ReadinessKey, RequestId, Role,
    RolloutId, StageIndex, Team,
};

use super::command::NoteAudience;

/// Schema version of every rollout event type except those listed below.
pub const SCHEMA_VERSION: u32 = 1;
/// `RolledBack` v2 added `automatic` (v1 rollbacks were all manual).
pub const ROLLED_BACK_SCHEMA_VERSION: u32 = 2;
/// `ReadingsRecorded` v2 added `source` and `evaluations` (v1 readings were all posted).
pub const READINGS_RECORDED_SCHEMA_VERSION: u32 = 2;

/// One approver counted toward one quorum rule (R1, R3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedApproval {
    pub approver: ActorId,
    /// Index of the quorum rule in the target stage's `approvals`.
    pub rule: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum RolloutEvent {
    RolloutCreated {
        rollout_id: RolloutId,
        feature_key: FeatureKey,
        title: String,
        team: Team,
        plan: Plan,
        plan_revision: u32,
        created_by: ActorId,
        at: DateTime<Utc>,
    },
    PlanRevised {
        plan: Plan,
        plan_revision: u32,
        /// Approvals on the open request that this revision invalidated (R6).
        invalidated_approvals: u32,
        revised_by: ActorId,
        at: DateTime<Utc>,
    },
    ReadinessSignedOff {
        item_key: ReadinessKey,
        role: Role,
        signed_by: ActorId,
        at: DateTime<Utc>,
    },
    /// Every readiness item is signed off (at once for an empty checklist).
    RolloutReady { at: DateTime<Utc> },
    RolloutStarted {
        stage: StageIndex,
        plan_revision: u32,
        started_by: ActorId,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    AdvanceRequested {
        request_id: RequestId,
        from_stage: Option<StageIndex>,
        to_stage: StageIndex,
        plan_revision: u32,
        requested_by: ActorId,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    AdvanceApproved {
        request_id: RequestId,
        approver: ActorId,
        /// The approver's roles named by the target stage's quorum rules, at that moment.
        roles: BTreeSet<Role>,
        comment: Option<String>,
        plan_revision: u32,
        /// When this approval stops counting (R6: policy validity window).
        expires_at: DateTime<Utc>,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    AdvanceRejected {
        request_id: RequestId,
        rejected_by: ActorId,
        roles: BTreeSet<Role>,
        comment: String,
        plan_revision: u32,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    AdvanceRequestWithdrawn {
        request_id: RequestId,
        withdrawn_by: ActorId,
        at: DateTime<Utc>,
    },
    Advanced {
        request_id: RequestId,
        from_stage: Option<StageIndex>,
        to_stage: StageIndex,
        plan_revision: u32,
        /// The approvals that satisfied the quorum, each toward one rule.
        counted_approvals: Vec<CountedApproval>,
        /// Success-criteria evaluations at the moment of the advance.
        evaluations: Vec<Evaluation>,
        /// Preconditions that were not met but were waived by deviations.
        waived: Vec<UnmetPrecondition>,
        /// Deviations consumed by this advance (single-use).
        deviations_used: Vec<DeviationId>,
        /// The recorded rationale for proceeding on inconclusive criteria.
        inconclusive_override: Option<String>,
        advanced_by: ActorId,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    /// Schema v2 (v1 lacked `source` and `evaluations`). `at` is when rollgate
    /// recorded them: it orders readings, whatever their `observed_at`.
    ReadingsRecorded {
        stage: Option<StageIndex>,
        /// Posted readings (empty for `source: prometheus`).
        readings: Vec<Reading>,
        source: ReadingSource,
        /// rollgate's evaluations of the stage's queries (empty for `posted`).
        evaluations: Vec<QueryEvaluation>,
        recorded_by: ActorId,
        at: DateTime<Utc>,
    },
    GuardrailBreached {
        stage: StageIndex,
        criterion: Criterion,
        /// The latest reading that breached the criterion.
        reading: Reading,
        action: OnBreach,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    Paused {
        reason: String,
        /// True when a guardrail breach paused the rollout.
        automatic: bool,
        paused_by: ActorId,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    Resumed {
        stage: Option<StageIndex>,
        resumed_by: ActorId,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    /// Schema v2 (v1 lacked `automatic`).
    RolledBack {
        from_stage: Option<StageIndex>,
        /// `None` = 0 % exposure.
        to_stage: Option<StageIndex>,
        reason: String,
        automatic: bool,
        rolled_back_by: ActorId,
        plan_revision: u32,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    RolloutCompleted {
        stage: StageIndex,
        completed_by: ActorId,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    RolloutAborted {
        reason: String,
        aborted_by: ActorId,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    DeviationRequested {
        deviation_id: DeviationId,
        rules: Vec<Rule>,
        justification: String,
        expires_at: DateTime<Utc>,
        /// The stage the deviation is scoped to (where the rollout was).
        stage: Option<StageIndex>,
        requested_by: ActorId,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    DeviationGranted {
        deviation_id: DeviationId,
        comment: String,
        granted_by: ActorId,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    DeviationDenied {
        deviation_id: DeviationId,
        comment: String,
        denied_by: ActorId,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    DecisionRecorded {
        decision_id: DecisionId,
        title: String,
        rationale: String,
        alternatives: Vec<String>,
        outcome: String,
        stage: Option<StageIndex>,
        decided_by: ActorId,
        policy_version: u64,
        at: DateTime<Utc>,
    },
    NoteAdded {
        audience: NoteAudience,
        text: String,
        stage: Option<StageIndex>,
        author: ActorId,
        at: DateTime<Utc>,
    },
    Annotated {
        annotation_id: AnnotationId,
        about: Option<String>,
        text: String,
        author: ActorId,
        at: DateTime<Utc>,
    },
}

const EVENT_TYPES: [&str; 23] = [
    "RolloutCreated",
    "PlanRevised",
    "ReadinessSignedOff",
    "RolloutReady",
    "RolloutStarted",
    "AdvanceRequested",
    "AdvanceApproved",
    "AdvanceRejected",
    "AdvanceRequestWithdrawn",
    "Advanced",
    "ReadingsRecorded",
    "GuardrailBreached",
    "Paused",
    "Resumed",
    "RolledBack",
    "RolloutCompleted",
    "RolloutAborted",
    "DeviationRequested",
    "DeviationGranted",
    "DeviationDenied",
    "DecisionRecorded",
    "NoteAdded",
    "Annotated",
];

fn stage_label(stage: Option<StageIndex>) -> String {
    stage.map_or_else(|| "0 %".to_owned(), |s| format!("stage {s}"))
}

impl RolloutEvent {
    /// The stored type name (the variant's name).
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::RolloutCreated { .. } => "RolloutCreated",
            Self::PlanRevised { .. } => "PlanRevised",
            Self::ReadinessSignedOff { .. } => "ReadinessSignedOff",
            Self::RolloutReady { .. } => "RolloutReady",
            Self::RolloutStarted { .. } => "RolloutStarted",
            Self::AdvanceRequested { .. } => "AdvanceRequested",
            Self::AdvanceApproved { .. } => "AdvanceApproved",
            Self::AdvanceRejected { .. } => "AdvanceRejected",
            Self::AdvanceRequestWithdrawn { .. } => "AdvanceRequestWithdrawn",
            Self::Advanced { .. } => "Advanced",
            Self::ReadingsRecorded { .. } => "ReadingsRecorded",
            Self::GuardrailBreached { .. } => "GuardrailBreached",
            Self::Paused { .. } => "Paused",
            Self::Resumed { .. } => "Resumed",
            Self::RolledBack { .. } => "RolledBack",
            Self::RolloutCompleted { .. } => "RolloutCompleted",
            Self::RolloutAborted { .. } => "RolloutAborted",
            Self::DeviationRequested { .. } => "DeviationRequested",
            Self::DeviationGranted { .. } => "DeviationGranted",
            Self::DeviationDenied { .. } => "DeviationDenied",
            Self::DecisionRecorded { .. } => "DecisionRecorded",
            Self::NoteAdded { .. } => "NoteAdded",
            Self::Annotated { .. } => "Annotated",
        }
    }

    /// The schema version this build writes for the event's type.
    pub fn schema_version(&self) -> u32 {
        Self::current_schema_version(self.event_type())
    }

    fn current_schema_version(event_type: &str) -> u32 {
        match event_type {
            "RolledBack" => ROLLED_BACK_SCHEMA_VERSION,
            "ReadingsRecorded" => READINGS_RECORDED_SCHEMA_VERSION,
            _ => SCHEMA_VERSION,
        }
    }

    /// Every stored type name of the rollout stream.
    pub const fn event_types() -> &'static [&'static str] {
        &EVENT_TYPES
    }

    /// The schema version this build writes for `event_type`, if it is one.
    pub fn schema_version_of(event_type: &str) -> Option<u32> {
        EVENT_TYPES
            .contains(&event_type)
            .then(|| Self::current_schema_version(event_type))
    }

    /// The variant's fields only, as JSON.
    pub fn payload(&self) -> Value {
        stored::payload_of(self)
    }

    /// Reads a stored event, upcasting older schema versions first.
    pub fn from_stored(
        event_type: &str,
        schema_version: u32,
        payload: Value,
    ) -> Result<Self, DecodeError> {
        if !EVENT_TYPES.contains(&event_type) {
            return Err(DecodeError::UnknownEventType(event_type.to_owned()));
        }
        let current = Self::current_schema_version(event_type);
        if schema_version == 0 || schema_version > current {
            return Err(DecodeError::UnsupportedSchemaVersion {
                event_type: event_type.to_owned(),
                schema_version,
            });
        }
        let mut payload = payload;
        let mut version = schema_version;
        while version < current {
            payload = upcast(event_type, version, payload)?;
            version += 1;
        }
        stored::decode(event_type, payload)
    }

    /// One line for the audit trail.
    pub fn summary(&self) -> String {
        match self {
            Self::RolloutCreated {
                feature_key,
                title,
                team,
                plan,
                created_by,
                ..
            } => format!(
                "{created_by} created rollout {feature_key} ({title}) for team {team} with {} stages",
                plan.stages().len()
            ),
            Self::PlanRevised {
                plan_revision,
                invalidated_approvals,
                revised_by,
                ..
            } => format!(
                "{revised_by} revised the plan to revision {plan_revision}; {invalidated_approvals} approvals invalidated"
            ),
            Self::ReadinessSignedOff {
                item_key,
                role,
                signed_by,
                ..
            } => format!("{signed_by} ({role}) signed off readiness item {item_key}"),
            Self::RolloutReady { .. } => "all readiness items are signed off: ready".to_owned(),
            Self::RolloutStarted {
                stage, started_by, ..
            } => format!("{started_by} started the rollout at stage {stage}"),
            Self::AdvanceRequested {
                from_stage,
                to_stage,
                requested_by,
                ..
            } => format!(
                "{requested_by} requested an advance from {} to stage {to_stage}",
                stage_label(*from_stage)
            ),
            Self::AdvanceApproved {
                request_id,
                approver,
                roles,
                ..
            } => format!(
                "{approver} ({}) approved advance request {request_id}",
                roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Self::AdvanceRejected {
                request_id,
                rejected_by,
                comment,
                ..
            } => format!("{rejected_by} rejected advance request {request_id}: {comment}"),
            Self::AdvanceRequestWithdrawn {
                request_id,
                withdrawn_by,
                ..
            } => format!("{withdrawn_by} withdrew advance request {request_id}"),
            Self::Advanced {
                from_stage,
                to_stage,
                advanced_by,
                deviations_used,
                inconclusive_override,
                ..
            } => {
                let mut s = format!(
                    "{advanced_by} advanced from {} to stage {to_stage}",
                    stage_label(*from_stage)
                );
                if !deviations_used.is_empty() {
                    s.push_str(&format!(" under {} deviation(s)", deviations_used.len()));
                }
                if let Some(why) = inconclusive_override {
                    s.push_str(&format!(" overriding inconclusive criteria: {why}"));
                }
                s
            }
            Self::ReadingsRecorded {
                readings,
                source: ReadingSource::Posted,
                recorded_by,
                stage,
                ..
            } => format!(
                "{recorded_by} recorded {} reading(s) at {}",
                readings.len(),
                stage_label(*stage)
            ),
            Self::ReadingsRecorded {
                evaluations,
                source: ReadingSource::Prometheus,
                stage,
                ..
            } => format!(
                "rollgate evaluated {} at {}: {}",
                evaluations.len(),
                stage_label(*stage),
                evaluations
                    .iter()
                    .map(|e| match (&e.inconclusive, e.value) {
                        (Some(why), _) => format!("{} inconclusive ({why})", e.metric),
                        (None, Some(v)) => format!("{} = {v}", e.metric),
                        (None, None) => format!("{} no value", e.metric),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Self::GuardrailBreached {
                stage,
                criterion,
                reading,
                action,
                ..
            } => format!(
                "guardrail breached at stage {stage}: {criterion} (value {} over {} samples); action: {}",
                reading.value,
                reading.samples,
                match action {
                    OnBreach::Rollback => "rollback",
                    OnBreach::Pause => "pause",
                }
            ),
            Self::Paused {
                reason,
                automatic,
                paused_by,
                ..
            } => format!(
                "{paused_by} paused the rollout{}: {reason}",
                if *automatic { " automatically" } else { "" }
            ),
            Self::Resumed {
                stage, resumed_by, ..
            } => format!("{resumed_by} resumed the rollout at {}", stage_label(*stage)),
            Self::RolledBack {
                from_stage,
                to_stage,
                reason,
                automatic,
                rolled_back_by,
                ..
            } => format!(
                "{rolled_back_by} rolled back{} from {} to {}: {reason}",
                if *automatic { " automatically" } else { "" },
                stage_label(*from_stage),
                stage_label(*to_stage)
            ),
            Self::RolloutCompleted {
                stage,
                completed_by,
                ..
            } => format!("{completed_by} completed the rollout at stage {stage}"),
            Self::RolloutAborted {
                reason, aborted_by, ..
            } => format!("{aborted_by} aborted the rollout: {reason}"),
            Self::DeviationRequested {
                rules,
                requested_by,
                justification,
                ..
            } => format!(
                "{requested_by} requested a deviation from {}: {justification}",
                rules.iter().map(|r| r.id()).collect::<Vec<_>>().join(", ")
            ),
            Self::DeviationGranted {
                deviation_id,
                granted_by,
                ..
            } => format!("{granted_by} granted deviation {deviation_id}"),
            Self::DeviationDenied {
                deviation_id,
                denied_by,
                comment,
                ..
            } => format!("{denied_by} denied deviation {deviation_id}: {comment}"),
            Self::DecisionRecorded {
                title,
                outcome,
                decided_by,
                ..
            } => format!("{decided_by} recorded decision \"{title}\": {outcome}"),
            Self::NoteAdded {
                audience, author, ..
            } => format!(
                "{author} added an {} note",
                match audience {
                    NoteAudience::Internal => "internal",
                    NoteAudience::External => "external",
                }
            ),
            Self::Annotated { author, about, .. } => match about {
                Some(about) => format!("{author} annotated {about}"),
                None => format!("{author} annotated the timeline"),
            },
        }
    }

    /// When the event happened.
    pub fn at(&self) -> DateTime<Utc> {
        match self {
            Self::RolloutCreated { at, .. }
            | Self::PlanRevised { at, .. }
            | Self::ReadinessSignedOff { at, .. }
            | Self::RolloutReady { at }
            | Self::RolloutStarted { at, .. }
            | Self::AdvanceRequested { at, .. }
            | Self::AdvanceApproved { at, .. }
            | Self::AdvanceRejected { at, .. }
            | Self::AdvanceRequestWithdrawn { at, .. }
            | Self::Advanced { at, .. }
            | Self::ReadingsRecorded { at, .. }
            | Self::GuardrailBreached { at, .. }
            | Self::Paused { at, .. }
            | Self::Resumed { at, .. }
            | Self::RolledBack { at, .. }
            | Self::RolloutCompleted { at, .. }
            | Self::RolloutAborted { at, .. }
            | Self::DeviationRequested { at, .. }
            | Self::DeviationGranted { at, .. }
            | Self::DeviationDenied { at, .. }
            | Self::DecisionRecorded { at, .. }
            | Self::NoteAdded { at, .. }
            | Self::Annotated { at, .. } => *at,
        }
    }
}

/// Raises a payload of `event_type` from schema `from` to `from + 1`.
fn upcast(event_type: &str, from: u32, payload: Value) -> Result<Value, DecodeError> {
    match (event_type, from, payload) {
        // v1 readings were all posted by callers.
        ("ReadingsRecorded", 1, Value::Object(mut fields)) => {
            fields
                .entry("source".to_owned())
                .or_insert(Value::String("posted".to_owned()));
            fields
                .entry("evaluations".to_owned())
                .or_insert(Value::Array(Vec::new()));
            Ok(Value::Object(fields))
        }
        // v1 had no `automatic`: every v1 rollback was ordered by a person.
        ("RolledBack", 1, Value::Object(mut fields)) => {
            fields
                .entry("automatic".to_owned())
                .or_insert(Value::Bool(false));
            Ok(Value::Object(fields))
        }
        (_, _, _) => Err(DecodeError::UnsupportedSchemaVersion {
            event_type: event_type.to_owned(),
            schema_version: from,
        }),
    }
}
