//! The folded state of one rollout stream, and `evolve`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Rule;
use crate::guardrail::{
    evaluate, CriterionKind, Evaluation, MetricEvaluations, MetricReadings, StageReadings,
};
use crate::plan::{Criterion, Plan, Stage};
use crate::values::{
    ActorId, AnnotationId, DecisionId, DeviationId, FeatureKey, Percentage, ReadinessKey,
    RequestId, Role, RolloutId, StageIndex, Team,
};

use super::event::RolloutEvent;

/// Where a rollout is in its lifecycle.
///
/// `RolledBack` behaves like `Paused` at the rollback target: `Resume` makes it
/// `Running` there again (at 0 % when rolled back before the first stage, from
/// where the next advance asks for stage 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStatus {
    Draft,
    Ready,
    Running,
    Paused,
    RolledBack,
    Completed,
    Aborted,
}

impl RolloutStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Ready => "ready",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::RolledBack => "rolled_back",
            Self::Completed => "completed",
            Self::Aborted => "aborted",
        }
    }

    pub const fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Aborted)
    }

    /// Running, paused or rolled back: some exposure is live.
    pub const fn is_live(self) -> bool {
        matches!(self, Self::Running | Self::Paused | Self::RolledBack)
    }
}

impl fmt::Display for RolloutStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Open,
    Rejected,
    Withdrawn,
    Executed,
    /// Closed because the rollout rolled back, completed or aborted.
    Superseded,
}

impl RequestStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Rejected => "rejected",
            Self::Withdrawn => "withdrawn",
            Self::Executed => "executed",
            Self::Superseded => "superseded",
        }
    }
}

/// One approval as given; whether it still counts depends on revision and time (R6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub approver: ActorId,
    pub roles: BTreeSet<Role>,
    pub plan_revision: u32,
    pub given_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl Approval {
    /// Counts under `revision` at `now` (R6).
    pub fn is_valid(&self, revision: u32, now: DateTime<Utc>) -> bool {
        self.plan_revision == revision && now < self.expires_at
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdvanceRequest {
    pub id: RequestId,
    pub from_stage: Option<StageIndex>,
    pub to_stage: StageIndex,
    pub requested_by: ActorId,
    pub requested_at: DateTime<Utc>,
    pub plan_revision: u32,
    pub status: RequestStatus,
    pub approvals: Vec<Approval>,
}

impl AdvanceRequest {
    /// The approvals that count now, one per person (the latest one).
    pub fn valid_approvals(&self, revision: u32, now: DateTime<Utc>) -> Vec<&Approval> {
        latest_per_person(self.approvals.iter().filter(|a| a.is_valid(revision, now)))
    }

    /// Every approval ever given, one per person (the latest one).
    pub fn all_approvals(&self) -> Vec<&Approval> {
        latest_per_person(self.approvals.iter())
    }
}

fn latest_per_person<'a>(approvals: impl Iterator<Item = &'a Approval>) -> Vec<&'a Approval> {
    let mut by_person: BTreeMap<&ActorId, &Approval> = BTreeMap::new();
    for a in approvals {
        by_person.insert(&a.approver, a);
    }
    by_person.into_values().collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviationStatus {
    Requested,
    Granted,
    Denied,
    Used,
}

impl DeviationStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "requested",
            Self::Granted => "granted",
            Self::Denied => "denied",
            Self::Used => "used",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deviation {
    pub id: DeviationId,
    pub rules: Vec<Rule>,
    pub justification: String,
    pub requested_by: ActorId,
    /// The stage the rollout was at when it was requested: the only stage it applies to.
    pub stage: Option<StageIndex>,
    pub expires_at: DateTime<Utc>,
    pub status: DeviationStatus,
    pub decided_by: Option<ActorId>,
}

impl Deviation {
    /// Granted, unused, unexpired and scoped to `stage`.
    pub fn is_usable(&self, stage: Option<StageIndex>, now: DateTime<Utc>) -> bool {
        self.status == DeviationStatus::Granted && self.stage == stage && now < self.expires_at
    }
}

/// A created rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: RolloutId,
    pub feature_key: FeatureKey,
    pub title: String,
    pub team: Team,
    pub plan: Plan,
    pub plan_revision: u32,
    pub status: RolloutStatus,
    /// The stage whose audience is exposed; `None` = 0 % (before stage 0).
    pub position: Option<StageIndex>,
    /// When the rollout entered `position` (soak is measured from here).
    pub stage_entered_at: Option<DateTime<Utc>>,
    pub readiness_signed: BTreeMap<ReadinessKey, ActorId>,
    /// What the guardrails keep of the readings recorded since entering the
    /// current stage (latest per metric its criteria name, plus counts).
    pub readings: StageReadings,
    pub requests: BTreeMap<RequestId, AdvanceRequest>,
    pub open_request: Option<RequestId>,
    pub deviations: BTreeMap<DeviationId, Deviation>,
    pub decision_ids: BTreeSet<DecisionId>,
    pub annotation_ids: BTreeSet<AnnotationId>,
    pub created_by: ActorId,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Number of events folded (the stream version).
    pub version: u64,
}

impl Rollout {
    pub fn current_stage(&self) -> Option<&Stage> {
        self.position.and_then(|p| self.plan.stage(p))
    }

    /// The stage an advance request would ask for, if there is one.
    pub fn next_stage(&self) -> Option<StageIndex> {
        let next = self.position.map_or(StageIndex::FIRST, StageIndex::next);
        self.plan.stage(next).map(|_| next)
    }

    /// The audience percentage currently exposed (0 before start, after a
    /// rollback to 0 % and after an abort).
    pub fn exposure(&self) -> Percentage {
        match self.status {
            RolloutStatus::Draft | RolloutStatus::Ready | RolloutStatus::Aborted => {
                Percentage::ZERO
            }
            _ => self
                .current_stage()
                .map_or(Percentage::ZERO, |s| s.audience.percentage),
        }
    }

    pub fn open_request(&self) -> Option<&AdvanceRequest> {
        self.open_request.and_then(|id| self.requests.get(&id))
    }

    /// Readiness items not yet signed off.
    pub fn unsigned_items(&self) -> Vec<&ReadinessKey> {
        self.plan
            .readiness_checklist()
            .iter()
            .map(|i| &i.key)
            .filter(|k| !self.readiness_signed.contains_key(*k))
            .collect()
    }

    fn close_open_request(&mut self, status: RequestStatus) {
        if let Some(id) = self.open_request.take() {
            if let Some(r) = self.requests.get_mut(&id) {
                r.status = status;
            }
        }
    }

    fn enter(&mut self, position: Option<StageIndex>, at: DateTime<Utc>) {
        self.position = position;
        self.stage_entered_at = Some(at);
        self.readings = StageReadings::default();
    }
}

/// What a criterion of the current stage was last judged on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LastObservation<'a> {
    /// The latest reading posted for its metric.
    Posted(&'a MetricReadings),
    /// rollgate's latest evaluation of its queries.
    Prometheus(&'a MetricEvaluations),
}

/// One criterion of the current stage, its verdict on what the stage keeps, and the last
/// reading or evaluation that verdict stands on.
#[derive(Clone, Debug, PartialEq)]
pub struct CriterionStatus<'a> {
    pub kind: CriterionKind,
    /// Its place in the stage's `success_criteria` or `rollback_criteria`.
    pub index: usize,
    pub criterion: &'a Criterion,
    pub evaluation: Evaluation,
    /// `None` before anything was recorded for it at this stage.
    pub last: Option<LastObservation<'a>>,
}

impl Rollout {
    /// Every criterion of the current stage (success, then rollback) judged now: a query
    /// criterion on rollgate's latest evaluation of its metric, any other on the latest
    /// posted reading. Empty at 0 % exposure.
    pub fn criteria_status(&self) -> Vec<CriterionStatus<'_>> {
        let Some(stage) = self.current_stage() else {
            return Vec::new();
        };
        let lists = [
            (CriterionKind::Success, &stage.success_criteria),
            (CriterionKind::Rollback, &stage.rollback_criteria),
        ];
        lists
            .into_iter()
            .flat_map(|(kind, list)| list.iter().enumerate().map(move |(i, c)| (kind, i, c)))
            .map(|(kind, index, criterion)| CriterionStatus {
                kind,
                index,
                criterion,
                evaluation: evaluate(criterion, kind, &self.readings),
                last: if criterion.queries.is_some() {
                    self.readings
                        .evaluation(&criterion.metric)
                        .map(LastObservation::Prometheus)
                } else {
                    self.readings
                        .metric(&criterion.metric)
                        .map(LastObservation::Posted)
                },
            })
            .collect()
    }
}

/// The state of one rollout stream; `Default` = not yet created.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutState {
    rollout: Option<Rollout>,
}

impl RolloutState {
    pub fn rollout(&self) -> Option<&Rollout> {
        self.rollout.as_ref()
    }

    pub fn is_created(&self) -> bool {
        self.rollout.is_some()
    }

    pub fn status(&self) -> Option<RolloutStatus> {
        self.rollout.as_ref().map(|r| r.status)
    }

    /// Folds events from scratch.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a RolloutEvent>) -> Self {
        events.into_iter().fold(Self::default(), evolve)
    }
}

/// Applies one event. Total: an event that does not fit the state is ignored
/// (it cannot have been emitted by `decide`).
pub fn evolve(state: RolloutState, event: &RolloutEvent) -> RolloutState {
    let Some(mut r) = state.rollout else {
        return match event {
            RolloutEvent::RolloutCreated {
                rollout_id,
                feature_key,
                title,
                team,
                plan,
                plan_revision,
                created_by,
                at,
            } => RolloutState {
                rollout: Some(Rollout {
                    id: *rollout_id,
                    feature_key: feature_key.clone(),
                    title: title.clone(),
                    team: team.clone(),
                    plan: plan.clone(),
                    plan_revision: *plan_revision,
                    status: RolloutStatus::Draft,
                    position: None,
                    stage_entered_at: None,
                    readiness_signed: BTreeMap::new(),
                    readings: StageReadings::default(),
                    requests: BTreeMap::new(),
                    open_request: None,
                    deviations: BTreeMap::new(),
                    decision_ids: BTreeSet::new(),
                    annotation_ids: BTreeSet::new(),
                    created_by: created_by.clone(),
                    created_at: *at,
                    updated_at: *at,
                    version: 1,
                }),
            },
            _ => RolloutState { rollout: None },
        };
    };
    r.version += 1;
    r.updated_at = event.at();
    match event {
        RolloutEvent::RolloutCreated { .. } => {}
        RolloutEvent::PlanRevised {
            plan,
            plan_revision,
            ..
        } => {
            r.plan = plan.clone();
            r.plan_revision = *plan_revision;
            let keys: BTreeSet<_> = plan.readiness_checklist().iter().map(|i| &i.key).collect();
            r.readiness_signed.retain(|k, _| keys.contains(k));
            if r.status == RolloutStatus::Ready {
                r.status = RolloutStatus::Draft;
            }
            let stage = r.position.and_then(|p| plan.stage(p));
            r.readings
                .retain(|m| stage.is_some_and(|s| s.judges_metric(m)));
        }
        RolloutEvent::ReadinessSignedOff {
            item_key,
            signed_by,
            ..
        } => {
            r.readiness_signed
                .insert(item_key.clone(), signed_by.clone());
        }
        RolloutEvent::RolloutReady { .. } => r.status = RolloutStatus::Ready,
        RolloutEvent::RolloutStarted { stage, at, .. } => {
            r.status = RolloutStatus::Running;
            r.enter(Some(*stage), *at);
        }
        RolloutEvent::AdvanceRequested {
            request_id,
            from_stage,
            to_stage,
            plan_revision,
            requested_by,
            at,
            ..
        } => {
            r.requests.insert(
                *request_id,
                AdvanceRequest {
                    id: *request_id,
                    from_stage: *from_stage,
                    to_stage: *to_stage,
                    requested_by: requested_by.clone(),
                    requested_at: *at,
                    plan_revision: *plan_revision,
                    status: RequestStatus::Open,
                    approvals: Vec::new(),
                },
            );
            r.open_request = Some(*request_id);
        }
        RolloutEvent::AdvanceApproved {
            request_id,
            approver,
            roles,
            plan_revision,
            expires_at,
            at,
            ..
        } => {
            if let Some(req) = r.requests.get_mut(request_id) {
                req.approvals.push(Approval {
                    approver: approver.clone(),
                    roles: roles.clone(),
                    plan_revision: *plan_revision,
                    given_at: *at,
                    expires_at: *expires_at,
                });
            }
        }
        RolloutEvent::AdvanceRejected { request_id, .. } => {
            close_request(&mut r, request_id, RequestStatus::Rejected);
        }
        RolloutEvent::AdvanceRequestWithdrawn { request_id, .. } => {
            close_request(&mut r, request_id, RequestStatus::Withdrawn);
        }
        RolloutEvent::Advanced {
            request_id,
            to_stage,
            deviations_used,
            at,
            ..
        } => {
            close_request(&mut r, request_id, RequestStatus::Executed);
            for d in deviations_used {
                if let Some(dev) = r.deviations.get_mut(d) {
                    dev.status = DeviationStatus::Used;
                }
            }
            r.enter(Some(*to_stage), *at);
        }
        RolloutEvent::ReadingsRecorded {
            readings,
            evaluations,
            at,
            ..
        } => {
            let stage = r.position.and_then(|p| r.plan.stage(p));
            r.readings
                .record(readings, *at, |m| stage.is_some_and(|s| s.judges_metric(m)));
            if let Some(stage) = stage {
                r.readings.record_evaluations(evaluations, *at, stage);
            }
        }
        RolloutEvent::GuardrailBreached { .. } => {}
        RolloutEvent::Paused { .. } => r.status = RolloutStatus::Paused,
        RolloutEvent::Resumed { .. } => {
            r.status = RolloutStatus::Running;
            r.readings.reset_inconclusive();
        }
        RolloutEvent::RolledBack { to_stage, at, .. } => {
            r.status = RolloutStatus::RolledBack;
            r.close_open_request(RequestStatus::Superseded);
            r.enter(*to_stage, *at);
        }
        RolloutEvent::RolloutCompleted { .. } => {
            r.status = RolloutStatus::Completed;
            r.close_open_request(RequestStatus::Superseded);
        }
        RolloutEvent::RolloutAborted { .. } => {
            r.status = RolloutStatus::Aborted;
            r.close_open_request(RequestStatus::Superseded);
        }
        RolloutEvent::DeviationRequested {
            deviation_id,
            rules,
            justification,
            expires_at,
            stage,
            requested_by,
            ..
        } => {
            r.deviations.insert(
                *deviation_id,
                Deviation {
                    id: *deviation_id,
                    rules: rules.clone(),
                    justification: justification.clone(),
                    requested_by: requested_by.clone(),
                    stage: *stage,
                    expires_at: *expires_at,
                    status: DeviationStatus::Requested,
                    decided_by: None,
                },
            );
        }
        RolloutEvent::DeviationGranted {
            deviation_id,
            granted_by,
            ..
        } => {
            if let Some(d) = r.deviations.get_mut(deviation_id) {
                d.status = DeviationStatus::Granted;
                d.decided_by = Some(granted_by.clone());
            }
        }
        RolloutEvent::DeviationDenied {
            deviation_id,
            denied_by,
            ..
        } => {
            if let Some(d) = r.deviations.get_mut(deviation_id) {
                d.status = DeviationStatus::Denied;
                d.decided_by = Some(denied_by.clone());
            }
        }
        RolloutEvent::DecisionRecorded { decision_id, .. } => {
            r.decision_ids.insert(*decision_id);
        }
        RolloutEvent::NoteAdded { .. } => {}
        RolloutEvent::Annotated { annotation_id, .. } => {
            r.annotation_ids.insert(*annotation_id);
        }
    }
    RolloutState { rollout: Some(r) }
}

fn close_request(r: &mut Rollout, id: &RequestId, status: RequestStatus) {
    if let Some(req) = r.requests.get_mut(id) {
        req.status = status;
    }
    if r.open_request == Some(*id) {
        r.open_request = None;
    }
}
