//! Rollout commands: one per write endpoint, already parsed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Rule, ValidationErrors};
use crate::guardrail::{QueryEvaluation, Reading};
use crate::plan::{Plan, PlanSpec};
use crate::values::{
    AnnotationId, DecisionId, DeviationId, FeatureKey, RequestId, RolloutId, StageIndex, Team,
};

/// Who a communication note is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoteAudience {
    Internal,
    External,
}

/// A request to change one rollout. Ids are chosen by the caller.
#[derive(Clone, Debug, PartialEq)]
pub enum RolloutCommand {
    Create {
        id: RolloutId,
        feature_key: FeatureKey,
        title: String,
        team: Team,
        plan: Plan,
    },
    /// Replaces the plan; bumps the revision and invalidates earlier approvals (R6).
    RevisePlan {
        plan: Plan,
    },
    SignOffReadiness {
        item_key: String,
    },
    /// ready → running at stage 0.
    Start,
    /// Asks for the next stage; one open request at a time.
    RequestAdvance {
        request_id: RequestId,
    },
    Approve {
        request_id: RequestId,
        comment: Option<String>,
    },
    /// Closes the request (R5); the comment is required.
    Reject {
        request_id: RequestId,
        comment: String,
    },
    WithdrawRequest {
        request_id: RequestId,
    },
    /// Executes an open request. `inconclusive_override` is the recorded
    /// rationale for proceeding although some success criteria are inconclusive.
    Advance {
        request_id: RequestId,
        inconclusive_override: Option<String>,
    },
    /// Readings posted by a caller (`source: posted`).
    RecordReadings {
        readings: Vec<Reading>,
    },
    /// Results of rollgate's own Prometheus evaluation of the current stage's
    /// query criteria (`source: prometheus`). Only the system actor
    /// ([`crate::Actor::system`]) may issue it; no request body maps to it.
    RecordEvaluation {
        evaluations: Vec<QueryEvaluation>,
    },
    Pause {
        reason: String,
    },
    Resume,
    /// `to_stage: None` is 0 % exposure (the known good state before stage 0).
    Rollback {
        to_stage: Option<StageIndex>,
        reason: String,
    },
    Complete,
    Abort {
        reason: String,
    },
    RequestDeviation {
        deviation_id: DeviationId,
        rules: Vec<Rule>,
        justification: String,
        expires_at: DateTime<Utc>,
    },
    GrantDeviation {
        deviation_id: DeviationId,
        comment: String,
    },
    /// The comment (why) is required.
    DenyDeviation {
        deviation_id: DeviationId,
        comment: String,
    },
    RecordDecision {
        decision_id: DecisionId,
        title: String,
        rationale: String,
        alternatives: Vec<String>,
        outcome: String,
    },
    AddNote {
        audience: NoteAudience,
        text: String,
    },
    /// A post-mortem annotation; `about` points at what it annotates
    /// (e.g. an event id or a timeline offset), free-form.
    Annotate {
        annotation_id: AnnotationId,
        about: Option<String>,
        text: String,
    },
}

impl RolloutCommand {
    /// A short imperative name, used in refusals ("cannot advance").
    pub fn action(&self) -> &'static str {
        match self {
            Self::Create { .. } => "create a rollout",
            Self::RevisePlan { .. } => "revise the plan",
            Self::SignOffReadiness { .. } => "sign off readiness",
            Self::Start => "start",
            Self::RequestAdvance { .. } => "request an advance",
            Self::Approve { .. } => "approve",
            Self::Reject { .. } => "reject",
            Self::WithdrawRequest { .. } => "withdraw a request",
            Self::Advance { .. } => "advance",
            Self::RecordReadings { .. } => "record readings",
            Self::RecordEvaluation { .. } => "record an evaluation",
            Self::Pause { .. } => "pause",
            Self::Resume => "resume",
            Self::Rollback { .. } => "roll back",
            Self::Complete => "complete",
            Self::Abort { .. } => "abort",
            Self::RequestDeviation { .. } => "request a deviation",
            Self::GrantDeviation { .. } => "grant a deviation",
            Self::DenyDeviation { .. } => "deny a deviation",
            Self::RecordDecision { .. } => "record a decision",
            Self::AddNote { .. } => "add a note",
            Self::Annotate { .. } => "annotate",
        }
    }
}

/// The create body: `{"feature_key","title","team","plan":{...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRolloutSpec {
    pub feature_key: String,
    pub title: String,
    pub team: String,
    pub plan: PlanSpec,
}

/// Checks a title: 1–200 bytes, not blank.
pub(crate) fn title_error(title: &str) -> Option<&'static str> {
    if title.trim().is_empty() {
        Some("must not be empty")
    } else if title.len() > 200 {
        Some("must be at most 200 bytes")
    } else {
        None
    }
}

impl CreateRolloutSpec {
    /// Parses the whole body into a `Create` command, reporting every violation.
    pub fn parse(self, id: RolloutId) -> Result<RolloutCommand, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let feature_key = FeatureKey::parse(&self.feature_key)
            .map_err(|e| errors.0.push(e.at("feature_key")))
            .ok();
        if let Some(msg) = title_error(&self.title) {
            errors.push("title", msg);
        }
        let team = Team::parse(&self.team)
            .map_err(|e| errors.0.push(e.at("team")))
            .ok();
        let plan = Plan::parse(self.plan)
            .map_err(|e| errors.0.extend(e.0))
            .ok();
        match (feature_key, team, plan) {
            (Some(feature_key), Some(team), Some(plan)) if errors.is_empty() => {
                Ok(RolloutCommand::Create {
                    id,
                    feature_key,
                    title: self.title,
                    team,
                    plan,
                })
            }
            _ => Err(errors),
        }
    }
}
