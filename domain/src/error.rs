//! Why a command was refused: every refusal names the rule and carries the facts.
//!
//! [`DomainError::kind`] is the one place that says how a refusal maps onto
//! an HTTP status class; [`DomainError::rule`] names the governance rule.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::values::{
    ActorId, DeviationId, FreezeId, MetricName, RequestId, Role, StageIndex, Team,
};

/// One invalid input, located by a JSON-pointer-like path such as
/// `plan.stages[1].audience.percentage`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error, located at `field` instead.
    pub fn at(mut self, field: impl Into<String>) -> Self {
        self.field = field.into();
        self
    }
}

/// Every violation found in one input (never just the first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(ValidationError::new(field, message));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ValidationError> {
        self.0.iter()
    }

    /// Is there an error at exactly this field path?
    pub fn has_field(&self, field: &str) -> bool {
        self.0.iter().any(|e| e.field == field)
    }

    /// `Ok(value)` when no error was collected.
    pub fn into_result<T>(self, value: T) -> Result<T, ValidationErrors> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl From<ValidationError> for ValidationErrors {
    fn from(e: ValidationError) -> Self {
        Self(vec![e])
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// The governance rules of DESIGN.md, plus `Permission` (the actor's roles do
/// not allow this command at all). Serialized as the rule id (`"R4"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Rule {
    R1,
    R2,
    R3,
    R4,
    R5,
    R6,
    R7,
    R8,
    R9,
    R10,
    R11,
    R12,
    #[serde(rename = "permission")]
    Permission,
}

impl Rule {
    pub const ALL: [Rule; 13] = [
        Rule::R1,
        Rule::R2,
        Rule::R3,
        Rule::R4,
        Rule::R5,
        Rule::R6,
        Rule::R7,
        Rule::R8,
        Rule::R9,
        Rule::R10,
        Rule::R11,
        Rule::R12,
        Rule::Permission,
    ];

    pub const fn id(self) -> &'static str {
        match self {
            Rule::R1 => "R1",
            Rule::R2 => "R2",
            Rule::R3 => "R3",
            Rule::R4 => "R4",
            Rule::R5 => "R5",
            Rule::R6 => "R6",
            Rule::R7 => "R7",
            Rule::R8 => "R8",
            Rule::R9 => "R9",
            Rule::R10 => "R10",
            Rule::R11 => "R11",
            Rule::R12 => "R12",
            Rule::Permission => "permission",
        }
    }

    pub const fn title(self) -> &'static str {
        match self {
            Rule::R1 => "quorum",
            Rule::R2 => "self-approval",
            Rule::R3 => "distinct approvers",
            Rule::R4 => "advance preconditions",
            Rule::R5 => "rejection closes the request",
            Rule::R6 => "approval validity",
            Rule::R7 => "rollback",
            Rule::R8 => "deviations",
            Rule::R9 => "freeze window",
            Rule::R10 => "read-only roles",
            Rule::R11 => "team scope",
            Rule::R12 => "event metadata",
            Rule::Permission => "permission",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        Self::ALL
            .into_iter()
            .find(|r| r.id().eq_ignore_ascii_case(s))
            .ok_or_else(|| ValidationError::new("rules", format!("{s:?} is not a rule id")))
    }

    /// Rules a granted deviation may waive: the advance preconditions (R4),
    /// approval validity (R6) and freeze windows (R9).
    pub const fn is_waivable(self) -> bool {
        matches!(self, Rule::R4 | Rule::R6 | Rule::R9)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.id(), self.title())
    }
}

/// How a refusal maps onto an answer: 422, 403, 409, 404.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    Validation,
    Forbidden,
    Conflict,
    NotFound,
}

/// One advance precondition that is not met (R4, R6 or R9).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnmetPrecondition {
    pub rule: Rule,
    /// `approvals`, `soak`, `success_criteria`, `rollback_criteria`, `freeze`.
    pub condition: String,
    pub detail: String,
}

impl fmt::Display for UnmetPrecondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.condition,
            self.rule.id(),
            self.detail
        )
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn head(unmet: &[UnmetPrecondition]) -> String {
    unmet.first().map_or_else(
        || "advance preconditions".to_owned(),
        |u| u.rule.to_string(),
    )
}

fn roles(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A refused command.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// Input or plan validation failed; every violation is listed.
    #[error("invalid input: {0}")]
    Validation(ValidationErrors),

    /// The actor's roles do not allow this command at all.
    #[error(
        "permission: {actor} may not {action}; it needs one of: {}",
        roles(needed)
    )]
    Permission {
        actor: ActorId,
        action: String,
        needed: Vec<Role>,
    },

    /// Only rollgate itself (its evaluator) may do this; no caller can.
    #[error("permission: {actor} may not {action}; only rollgate's own evaluator does")]
    SystemOnly { actor: ActorId, action: String },

    /// R1: only holders of a role named by the target stage's quorum rules may approve or reject.
    #[error(
        "R1 quorum: {actor} holds none of the roles the quorum rules name ({})",
        roles(named)
    )]
    NotAQuorumRole { actor: ActorId, named: Vec<Role> },

    /// R2: the requester cannot approve (or reject) their own request.
    #[error("R2 self-approval: {actor} requested this advance and cannot approve it")]
    SelfApproval {
        actor: ActorId,
        request_id: RequestId,
    },

    /// R3: a person approves a request once.
    #[error("R3 distinct approvers: {actor} has already approved this request")]
    DuplicateApproval {
        actor: ActorId,
        request_id: RequestId,
    },

    /// R4 / R6 / R9: the advance preconditions are not met; `rule()` is the first one's rule.
    #[error("{}: advance refused: {}", head(unmet), join(unmet))]
    AdvanceBlocked {
        request_id: RequestId,
        unmet: Vec<UnmetPrecondition>,
    },

    /// R5: the request was rejected (or otherwise closed); start a new request.
    #[error(
        "R5 rejection closes the request: request {request_id} is {status}; request a new advance"
    )]
    RequestClosed {
        request_id: RequestId,
        status: String,
    },

    /// R7: only release managers and SREs roll back by hand.
    #[error("R7 rollback: {actor} may not roll back; release_manager or sre is required")]
    RollbackNotAllowed { actor: ActorId },

    /// R7: a rollback needs a reason.
    #[error("R7 rollback: a rollback requires a non-empty reason")]
    RollbackReasonMissing,

    /// R8: the actor may not grant or deny deviations.
    #[error(
        "R8 deviations: {actor} holds no deviation granter role ({})",
        roles(granters)
    )]
    NotAGranter { actor: ActorId, granters: Vec<Role> },

    /// R8: the requester of a deviation cannot grant it.
    #[error("R8 deviations: {actor} requested deviation {deviation_id} and cannot grant it")]
    SelfGrantedDeviation {
        actor: ActorId,
        deviation_id: DeviationId,
    },

    /// R8: the deviation is not pending (already granted, denied, used) or has expired.
    #[error("R8 deviations: deviation {deviation_id} is {status}")]
    DeviationUnavailable {
        deviation_id: DeviationId,
        status: String,
    },

    /// R9: a freeze window is active; start and resume wait like advances
    /// (pause and rollback never do).
    #[error(
        "R9 freeze window: cannot {action}: freeze {freeze_id} is active until {until}: {reason}"
    )]
    Frozen {
        action: String,
        freeze_id: FreezeId,
        until: String,
        reason: String,
    },

    /// R10: auditors and viewers never write.
    #[error("R10 read-only roles: {actor} holds only read roles and cannot write")]
    ReadOnly { actor: ActorId },

    /// R11: unknown rollout, or a rollout outside the actor's teams (never says which).
    #[error("rollout not found")]
    RolloutNotFound,

    /// R11: creating a rollout (or touching a policy) for a team outside the actor's teams.
    #[error("R11 team scope: {actor} does not act for team {team}")]
    TeamNotAllowed { actor: ActorId, team: Team },

    /// The command does not fit the rollout's lifecycle state.
    #[error("rollout is {status}: cannot {action}")]
    WrongState { status: String, action: String },

    /// Create on an existing stream.
    #[error("rollout already exists")]
    AlreadyExists,

    /// A second advance request while one is open.
    #[error("advance request {open} is still open: withdraw it or decide it first")]
    RequestAlreadyOpen { open: RequestId },

    /// The id names no advance request of this rollout.
    #[error("unknown advance request {0}")]
    UnknownRequest(RequestId),

    /// The id names no deviation of this rollout.
    #[error("unknown deviation {0}")]
    UnknownDeviation(DeviationId),

    /// An id chosen by the caller is already in use.
    #[error("id {0} is already used in this stream")]
    DuplicateId(String),

    /// Request advance (or complete) with no further stage.
    #[error("rollout is at its last stage {at}: complete it instead of advancing")]
    NoNextStage { at: StageIndex },

    /// Complete before the last stage.
    #[error("rollout can complete only at its last stage ({last}); it is at {at}")]
    NotAtLastStage { at: String, last: StageIndex },

    /// A readiness item that is already signed off.
    #[error("readiness item {key} is already signed off")]
    AlreadySignedOff { key: String },

    /// A freeze or policy change that does not fit the policy state.
    #[error("policy: {0}")]
    PolicyConflict(String),

    /// An evaluation of a metric whose scheduled instant is not after the latest one recorded
    /// for it at this stage: each interval is recorded once, whoever evaluates it again.
    #[error(
        "{metric} is already evaluated at this stage up to {latest}: an evaluation scheduled at {evaluated_at} is not newer"
    )]
    AlreadyEvaluated {
        metric: MetricName,
        evaluated_at: DateTime<Utc>,
        latest: DateTime<Utc>,
    },
}

impl DomainError {
    /// A single validation error at `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(ValidationError::new(field, message).into())
    }

    pub(crate) fn wrong_state(status: impl fmt::Display, action: &str) -> Self {
        Self::WrongState {
            status: status.to_string(),
            action: action.to_owned(),
        }
    }

    /// The governance rule that refused, if one did.
    pub fn rule(&self) -> Option<Rule> {
        match self {
            Self::Permission { .. } | Self::SystemOnly { .. } => Some(Rule::Permission),
            Self::NotAQuorumRole { .. } => Some(Rule::R1),
            Self::SelfApproval { .. } => Some(Rule::R2),
            Self::DuplicateApproval { .. } => Some(Rule::R3),
            Self::AdvanceBlocked { unmet, .. } => unmet.first().map(|u| u.rule),
            Self::RequestClosed { .. } => Some(Rule::R5),
            Self::RollbackNotAllowed { .. } | Self::RollbackReasonMissing => Some(Rule::R7),
            Self::NotAGranter { .. }
            | Self::SelfGrantedDeviation { .. }
            | Self::DeviationUnavailable { .. } => Some(Rule::R8),
            Self::Frozen { .. } => Some(Rule::R9),
            Self::ReadOnly { .. } => Some(Rule::R10),
            Self::RolloutNotFound | Self::TeamNotAllowed { .. } => Some(Rule::R11),
            Self::Validation(_)
            | Self::WrongState { .. }
            | Self::AlreadyExists
            | Self::RequestAlreadyOpen { .. }
            | Self::UnknownRequest(_)
            | Self::UnknownDeviation(_)
            | Self::DuplicateId(_)
            | Self::NoNextStage { .. }
            | Self::NotAtLastStage { .. }
            | Self::AlreadySignedOff { .. }
            | Self::AlreadyEvaluated { .. }
            | Self::PolicyConflict(_) => None,
        }
    }

    /// How the refusal is answered (422 / 403 / 409 / 404).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Validation(_) | Self::RollbackReasonMissing => ErrorKind::Validation,
            Self::Permission { .. }
            | Self::SystemOnly { .. }
            | Self::NotAQuorumRole { .. }
            | Self::SelfApproval { .. }
            | Self::RollbackNotAllowed { .. }
            | Self::NotAGranter { .. }
            | Self::SelfGrantedDeviation { .. }
            | Self::ReadOnly { .. } => ErrorKind::Forbidden,
            // R11: another team's rollout or team answers as one that does not exist; an id
            // that names nothing on the rollout is a missing resource too.
            Self::RolloutNotFound
            | Self::TeamNotAllowed { .. }
            | Self::UnknownRequest(_)
            | Self::UnknownDeviation(_) => ErrorKind::NotFound,
            Self::DuplicateApproval { .. }
            | Self::AdvanceBlocked { .. }
            | Self::Frozen { .. }
            | Self::RequestClosed { .. }
            | Self::DeviationUnavailable { .. }
            | Self::WrongState { .. }
            | Self::AlreadyExists
            | Self::RequestAlreadyOpen { .. }
            | Self::DuplicateId(_)
            | Self::NoNextStage { .. }
            | Self::NotAtLastStage { .. }
            | Self::AlreadySignedOff { .. }
            | Self::AlreadyEvaluated { .. }
            | Self::PolicyConflict(_) => ErrorKind::Conflict,
        }
    }
}

impl From<ValidationErrors> for DomainError {
    fn from(e: ValidationErrors) -> Self {
        Self::Validation(e)
    }
}

impl From<ValidationError> for DomainError {
    fn from(e: ValidationError) -> Self {
        Self::Validation(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_ids_round_trip() {
        for r in Rule::ALL {
            assert_eq!(Rule::parse(r.id()).unwrap(), r);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.id()));
            assert_eq!(serde_json::from_str::<Rule>(&json).unwrap(), r);
        }
        assert_eq!(Rule::R2.title(), "self-approval");
    }

    #[test]
    fn messages_start_with_the_rule() {
        let e = DomainError::SelfApproval {
            actor: ActorId::parse("alice").unwrap(),
            request_id: RequestId::new(uuid::Uuid::nil()),
        };
        assert_eq!(
            e.to_string(),
            "R2 self-approval: alice requested this advance and cannot approve it"
        );
        assert_eq!(e.kind(), ErrorKind::Forbidden);
        assert_eq!(
            DomainError::RolloutNotFound.to_string(),
            "rollout not found"
        );
        assert_eq!(DomainError::RolloutNotFound.kind(), ErrorKind::NotFound);
    }
}
