//! The gate decision: may a rollout take a transition now?
//!
//! Delivery tools (Flagger's confirm webhooks, Argo Rollouts' web analysis,
//! flag files) ask rollgate before they move traffic. [`gate`] answers from the
//! folded state, the policy snapshot and `now` alone: [`GateVerdict::Allow`],
//! [`GateVerdict::Wait`] (something can still change: approvals, soak,
//! readings, a freeze ending, a resume) or [`GateVerdict::Deny`] (the
//! rollout will not take this transition from where it is: rolled back,
//! aborted, completed, past the last stage), with one [`Reason`] per fact it
//! looked at, satisfied or not.
//!
//! The gate and the commands agree: for the transition a command performs,
//! the gate allows exactly when `decide` would accept that command from an
//! actor holding the command's role (the domain's property tests check this
//! over generated histories). The checks mirror `decide`:
//!
//! - `advance` to the next stage (R4, R6, R9): an open request, its quorum
//!   over still-valid approvals (R1, R6), the current stage's soak, its
//!   success criteria (inconclusive waits: only a person may override), no
//!   breached rollback criterion, no active freeze. A granted, unexpired,
//!   unused deviation scoped to the current stage waives the conditions of
//!   the rules it names, exactly as `Advance` would use it.
//! - `start` needs every readiness item signed off; `start` and `resume`
//!   raise exposure, so an active freeze blocks them too (R9).
//! - `pause` and `rollback` are never blocked by a freeze; they only need a
//!   state they apply to.
//!
//! Reasons are machine-readable: a stable `code`, an `effect` (`ok`,
//! `waived`, `wait`, `deny`), the rule involved and the facts (who approved,
//! seconds remaining, readings against thresholds, open items, the freeze).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::context::PolicySnapshot;
use crate::error::Rule;
use crate::guardrail::{evaluate, CriterionKind, Verdict};
use crate::rollout::quorum;
use crate::rollout::{Rollout, RolloutStatus};
use crate::values::{
    ActorId, Comparator, FreezeId, MetricName, Percentage, ReadinessKey, RequestId, Role,
    RolloutId, StageIndex,
};

/// A transition a delivery tool may ask about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Transition {
    /// ready → running at stage 0.
    Start,
    /// Enter `to_stage` (only the next stage can be entered; earlier ones are
    /// already reached).
    Advance {
        to_stage: StageIndex,
    },
    /// paused or rolled back → running.
    Resume,
    /// Finish at the last stage.
    Complete,
    Pause,
    Rollback,
}

impl Transition {
    /// `start`, `advance`, `resume`, `complete`, `pause`, `rollback`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Advance { .. } => "advance",
            Self::Resume => "resume",
            Self::Complete => "complete",
            Self::Pause => "pause",
            Self::Rollback => "rollback",
        }
    }

    /// Whether the transition raises exposure (and so is blocked by a freeze, R9).
    pub const fn raises_exposure(self) -> bool {
        matches!(self, Self::Start | Self::Advance { .. } | Self::Resume)
    }

    /// The transition a rollout would take next: start before it runs, the
    /// next stage (or completion at the last stage) while running, resume
    /// while paused or rolled back. Terminal rollouts answer `Complete`,
    /// which the gate denies.
    pub fn next_for(r: &Rollout) -> Self {
        match r.status {
            RolloutStatus::Draft | RolloutStatus::Ready => Self::Start,
            RolloutStatus::Running => match r.next_stage() {
                Some(to_stage) => Self::Advance { to_stage },
                None => Self::Complete,
            },
            RolloutStatus::Paused | RolloutStatus::RolledBack => Self::Resume,
            RolloutStatus::Completed | RolloutStatus::Aborted => Self::Complete,
        }
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Advance { to_stage } => write!(f, "advance to stage {to_stage}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The gate's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateVerdict {
    Allow,
    Wait,
    Deny,
}

impl GateVerdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Wait => "wait",
            Self::Deny => "deny",
        }
    }

    /// The stable word an Argo Rollouts `jsonPath` picks:
    /// `approved`, `pending` or `rejected`.
    pub const fn word(self) -> &'static str {
        match self {
            Self::Allow => "approved",
            Self::Wait => "pending",
            Self::Deny => "rejected",
        }
    }
}

impl fmt::Display for GateVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one reason does to the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Satisfied, or informational.
    Ok,
    /// Unmet, but a granted deviation waives it.
    Waived,
    /// Unmet; may change (the verdict is at least `wait`).
    Wait,
    /// The transition will not happen from here (the verdict is `deny`).
    Deny,
}

impl Effect {
    pub const fn blocks(self) -> bool {
        matches!(self, Self::Wait | Self::Deny)
    }
}

/// One approver counted toward a quorum rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approver {
    pub id: ActorId,
    pub at: DateTime<Utc>,
}

/// The facts behind a reason, tagged by `code`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum ReasonDetail {
    /// One quorum rule of the target stage (R1): who counted toward it.
    Quorum {
        /// Index of the rule in the target stage's `approvals`.
        rule_index: usize,
        roles: Vec<Role>,
        required: u32,
        approved_by: Vec<Approver>,
        missing: u32,
    },
    /// The open request and the plan revision its approvals are bound to (R6);
    /// `not_counted` approvals expired or were given under another revision.
    Approvals {
        request_id: RequestId,
        requested_by: ActorId,
        plan_revision: u32,
        not_counted: u32,
    },
    /// No open advance request for the stage: a release manager must request it.
    NoOpenRequest {
        to_stage: StageIndex,
    },
    /// Minimum soak time in the current stage.
    Soak {
        stage: StageIndex,
        required_seconds: u64,
        soaked_seconds: u64,
        remaining_seconds: u64,
    },
    /// One success or rollback criterion of the current stage.
    Guardrail {
        stage: StageIndex,
        criterion: CriterionKind,
        metric: MetricName,
        comparator: Comparator,
        threshold: f64,
        min_samples: u64,
        value: Option<f64>,
        samples: u64,
        verdict: Verdict,
    },
    /// Readiness items not yet signed off.
    ReadinessOpen {
        items: Vec<ReadinessKey>,
    },
    /// A freeze window in force (R9).
    Freeze {
        freeze_id: FreezeId,
        ends_at: DateTime<Utc>,
        reason: String,
    },
    Paused,
    RolledBack {
        to_stage: Option<StageIndex>,
    },
    Aborted,
    Completed,
    /// Not started yet (draft or ready).
    NotStarted,
    /// The stage is already exposed (or passed).
    AlreadyReached {
        stage: StageIndex,
    },
    /// An earlier stage must be entered first.
    NotNextStage {
        requested: StageIndex,
        next: Option<StageIndex>,
    },
    /// The plan has no such stage.
    NoSuchStage {
        requested: StageIndex,
    },
    /// Completion happens at the last stage only.
    NotAtLastStage {
        position: Option<StageIndex>,
        last: StageIndex,
    },
    /// The transition does not apply to the rollout's status.
    WrongState {
        status: RolloutStatus,
    },
    /// Rollback needs some exposure to take back.
    NothingToRollBack,
    /// The canary revision (Flagger's checksum) differs from the one the
    /// approvals were recorded with.
    CanaryChanged {
        approved: String,
        current: String,
    },
}

/// One fact the gate looked at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    #[serde(flatten)]
    pub detail: ReasonDetail,
    pub effect: Effect,
    /// The governance rule involved, if any (R4, R6, R9, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    /// One line for people (Flagger shows it in Kubernetes events).
    pub message: String,
}

impl Reason {
    pub fn new(detail: ReasonDetail, effect: Effect, rule: Option<Rule>) -> Self {
        let message = describe(&detail, effect);
        Self {
            detail,
            effect,
            rule,
            message,
        }
    }

    /// The stable code (`quorum`, `soak`, `freeze`, ...).
    pub fn code(&self) -> &'static str {
        self.detail.code()
    }
}

impl ReasonDetail {
    pub const fn code(&self) -> &'static str {
        match self {
            Self::Quorum { .. } => "quorum",
            Self::Approvals { .. } => "approvals",
            Self::NoOpenRequest { .. } => "no_open_request",
            Self::Soak { .. } => "soak",
            Self::Guardrail { .. } => "guardrail",
            Self::ReadinessOpen { .. } => "readiness_open",
            Self::Freeze { .. } => "freeze",
            Self::Paused => "paused",
            Self::RolledBack { .. } => "rolled_back",
            Self::Aborted => "aborted",
            Self::Completed => "completed",
            Self::NotStarted => "not_started",
            Self::AlreadyReached { .. } => "already_reached",
            Self::NotNextStage { .. } => "not_next_stage",
            Self::NoSuchStage { .. } => "no_such_stage",
            Self::NotAtLastStage { .. } => "not_at_last_stage",
            Self::WrongState { .. } => "wrong_state",
            Self::NothingToRollBack => "nothing_to_roll_back",
            Self::CanaryChanged { .. } => "canary_changed",
        }
    }
}

fn stage_name(s: Option<StageIndex>) -> String {
    s.map_or_else(|| "0 %".to_owned(), |s| format!("stage {s}"))
}

fn describe(detail: &ReasonDetail, effect: Effect) -> String {
    let base = match detail {
        ReasonDetail::Quorum {
            roles,
            required,
            approved_by,
            missing,
            ..
        } => {
            let roles = roles.iter().map(|r| r.as_str()).collect::<Vec<_>>();
            let who = approved_by
                .iter()
                .map(|a| a.id.as_str())
                .collect::<Vec<_>>();
            let got = if who.is_empty() {
                "none yet".to_owned()
            } else {
                who.join(", ")
            };
            if *missing == 0 {
                format!("quorum {required} of {}: met ({got})", roles.join("/"))
            } else {
                format!(
                    "waiting for {missing} more approval(s) of {} ({required} needed; approved: {got})",
                    roles.join("/")
                )
            }
        }
        ReasonDetail::Approvals {
            request_id,
            plan_revision,
            not_counted,
            ..
        } => format!(
            "approvals of request {request_id} are bound to plan revision {plan_revision}; {not_counted} not counted (expired or earlier revision)"
        ),
        ReasonDetail::NoOpenRequest { to_stage } => {
            format!("no open advance request for stage {to_stage}")
        }
        ReasonDetail::Soak {
            stage,
            required_seconds,
            soaked_seconds,
            remaining_seconds,
        } => {
            if *remaining_seconds == 0 {
                format!("stage {stage} soaked {soaked_seconds}s of {required_seconds}s")
            } else {
                format!(
                    "stage {stage} soak running: {remaining_seconds}s remaining ({soaked_seconds}s of {required_seconds}s)"
                )
            }
        }
        ReasonDetail::Guardrail {
            criterion,
            metric,
            comparator,
            threshold,
            value,
            samples,
            min_samples,
            verdict,
            ..
        } => {
            let facts = value.map_or_else(
                || "no reading".to_owned(),
                |v| format!("value {v} over {samples} samples"),
            );
            let state = match (criterion, verdict) {
                (CriterionKind::Rollback, Verdict::Fail) => "breached",
                (CriterionKind::Rollback, Verdict::Pass) => "not breached",
                (CriterionKind::Success, Verdict::Pass) => "met",
                (CriterionKind::Success, Verdict::Fail) => "not met",
                (_, Verdict::Inconclusive) => "inconclusive",
            };
            let kind = match criterion {
                CriterionKind::Success => "success",
                CriterionKind::Rollback => "rollback",
            };
            format!(
                "{kind} criterion {metric} {comparator} {threshold} {state}: {facts} (min {min_samples} samples)"
            )
        }
        ReasonDetail::ReadinessOpen { items } => format!(
            "readiness items open: {}",
            items.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(", ")
        ),
        ReasonDetail::Freeze {
            freeze_id,
            ends_at,
            reason,
        } => format!(
            "freeze {freeze_id} in force until {}: {reason}",
            ends_at.to_rfc3339()
        ),
        ReasonDetail::Paused => "rollout is paused".to_owned(),
        ReasonDetail::RolledBack { to_stage } => {
            format!("rollout was rolled back to {}", stage_name(*to_stage))
        }
        ReasonDetail::Aborted => "rollout was aborted".to_owned(),
        ReasonDetail::Completed => "rollout is completed".to_owned(),
        ReasonDetail::NotStarted => "rollout has not started".to_owned(),
        ReasonDetail::AlreadyReached { stage } => format!("stage {stage} is already reached"),
        ReasonDetail::NotNextStage { requested, next } => match next {
            Some(n) => format!("stage {requested} is not the next stage ({n} comes first)"),
            None => format!("stage {requested} is not the next stage"),
        },
        ReasonDetail::NoSuchStage { requested } => format!("the plan has no stage {requested}"),
        ReasonDetail::NotAtLastStage { position, last } => format!(
            "completion needs the last stage {last}; the rollout is at {}",
            stage_name(*position)
        ),
        ReasonDetail::WrongState { status } => format!("not possible while {status}"),
        ReasonDetail::NothingToRollBack => "nothing to roll back: exposure is 0 %".to_owned(),
        ReasonDetail::CanaryChanged { approved, current } => format!(
            "canary changed since approval (approved checksum {approved}, now {current})"
        ),
    };
    if effect == Effect::Waived {
        format!("{base} (waived by a granted deviation)")
    } else {
        base
    }
}

/// The gate's answer for one rollout and transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    pub rollout_id: RolloutId,
    pub transition: Transition,
    pub verdict: GateVerdict,
    /// `approved`, `pending` or `rejected` (see [`GateVerdict::word`]).
    pub result: String,
    pub status: RolloutStatus,
    pub position: Option<StageIndex>,
    pub exposure: Percentage,
    pub plan_revision: u32,
    pub policy_version: u64,
    pub evaluated_at: DateTime<Utc>,
    pub reasons: Vec<Reason>,
}

impl Gate {
    /// The verdict the reasons add up to: deny over wait over allow.
    pub fn verdict_of(reasons: &[Reason]) -> GateVerdict {
        match reasons.iter().map(|r| r.effect).max() {
            Some(Effect::Deny) => GateVerdict::Deny,
            Some(Effect::Wait) => GateVerdict::Wait,
            _ => GateVerdict::Allow,
        }
    }

    /// Adds a reason and recomputes the verdict (used for facts outside the
    /// rollout stream, such as a changed canary checksum).
    pub fn with_reason(mut self, reason: Reason) -> Self {
        self.reasons.push(reason);
        self.verdict = Self::verdict_of(&self.reasons);
        self.result = self.verdict.word().to_owned();
        self
    }

    /// The reasons that hold the transition back.
    pub fn blocking(&self) -> impl Iterator<Item = &Reason> {
        self.reasons.iter().filter(|r| r.effect.blocks())
    }

    /// One line: the verdict and the blocking reasons (or "allowed").
    pub fn summary(&self) -> String {
        let blocking: Vec<_> = self.blocking().map(|r| r.message.as_str()).collect();
        if blocking.is_empty() {
            format!("{}: allowed", self.transition)
        } else {
            format!(
                "{} {}: {}",
                self.transition,
                self.verdict,
                blocking.join("; ")
            )
        }
    }

    /// Whether a reason with this code is present.
    pub fn has(&self, code: &str) -> bool {
        self.reasons.iter().any(|r| r.code() == code)
    }
}

/// Decides whether `r` may take `transition` at `now` under `policy`.
pub fn gate(
    r: &Rollout,
    policy: &PolicySnapshot,
    now: DateTime<Utc>,
    transition: Transition,
) -> Gate {
    let mut reasons = Vec::new();
    match transition {
        Transition::Start => start(r, policy, now, &mut reasons),
        Transition::Advance { to_stage } => advance(r, policy, now, to_stage, &mut reasons),
        Transition::Resume => resume(r, policy, now, &mut reasons),
        Transition::Complete => complete(r, &mut reasons),
        Transition::Pause => {
            if r.status != RolloutStatus::Running {
                status_reason(r, &mut reasons);
            }
        }
        Transition::Rollback => rollback(r, &mut reasons),
    }
    let verdict = Gate::verdict_of(&reasons);
    Gate {
        rollout_id: r.id,
        transition,
        verdict,
        result: verdict.word().to_owned(),
        status: r.status,
        position: r.position,
        exposure: r.exposure(),
        plan_revision: r.plan_revision,
        policy_version: policy.version,
        evaluated_at: now,
        reasons,
    }
}

/// Why the status itself blocks a transition that needs another one.
fn status_reason(r: &Rollout, reasons: &mut Vec<Reason>) {
    let (detail, effect) = match r.status {
        RolloutStatus::Completed => (ReasonDetail::Completed, Effect::Deny),
        RolloutStatus::Aborted => (ReasonDetail::Aborted, Effect::Deny),
        RolloutStatus::RolledBack => (
            ReasonDetail::RolledBack {
                to_stage: r.position,
            },
            Effect::Deny,
        ),
        RolloutStatus::Paused => (ReasonDetail::Paused, Effect::Wait),
        RolloutStatus::Draft | RolloutStatus::Ready => (ReasonDetail::NotStarted, Effect::Wait),
        RolloutStatus::Running => (ReasonDetail::WrongState { status: r.status }, Effect::Deny),
    };
    reasons.push(Reason::new(detail, effect, None));
}

fn freeze(policy: &PolicySnapshot, now: DateTime<Utc>) -> Option<ReasonDetail> {
    policy.is_frozen_at(now).map(|f| ReasonDetail::Freeze {
        freeze_id: f.id,
        ends_at: f.ends_at,
        reason: f.reason.clone(),
    })
}

fn start(r: &Rollout, policy: &PolicySnapshot, now: DateTime<Utc>, reasons: &mut Vec<Reason>) {
    match r.status {
        RolloutStatus::Draft => {
            let items: Vec<ReadinessKey> = r.unsigned_items().into_iter().cloned().collect();
            reasons.push(Reason::new(
                ReasonDetail::ReadinessOpen { items },
                Effect::Wait,
                None,
            ));
        }
        RolloutStatus::Ready => {}
        RolloutStatus::Running | RolloutStatus::Paused | RolloutStatus::RolledBack => {
            reasons.push(Reason::new(
                ReasonDetail::WrongState { status: r.status },
                Effect::Deny,
                None,
            ));
        }
        RolloutStatus::Completed | RolloutStatus::Aborted => status_reason(r, reasons),
    }
    if let Some(f) = freeze(policy, now) {
        reasons.push(Reason::new(f, Effect::Wait, Some(Rule::R9)));
    }
}

fn resume(r: &Rollout, policy: &PolicySnapshot, now: DateTime<Utc>, reasons: &mut Vec<Reason>) {
    match r.status {
        RolloutStatus::Paused | RolloutStatus::RolledBack => {}
        RolloutStatus::Running => reasons.push(Reason::new(
            ReasonDetail::WrongState { status: r.status },
            Effect::Deny,
            None,
        )),
        _ => status_reason(r, reasons),
    }
    if let Some(f) = freeze(policy, now) {
        reasons.push(Reason::new(f, Effect::Wait, Some(Rule::R9)));
    }
}

fn complete(r: &Rollout, reasons: &mut Vec<Reason>) {
    if r.status != RolloutStatus::Running {
        status_reason(r, reasons);
        return;
    }
    let last = r.plan.last_stage();
    if r.position != Some(last) {
        reasons.push(Reason::new(
            ReasonDetail::NotAtLastStage {
                position: r.position,
                last,
            },
            Effect::Wait,
            None,
        ));
    }
}

fn rollback(r: &Rollout, reasons: &mut Vec<Reason>) {
    match r.status {
        RolloutStatus::Running | RolloutStatus::Paused | RolloutStatus::RolledBack => {
            if r.position.is_none() {
                reasons.push(Reason::new(
                    ReasonDetail::NothingToRollBack,
                    Effect::Deny,
                    None,
                ));
            }
        }
        _ => status_reason(r, reasons),
    }
}

/// One unmet-or-met advance condition before waivers are applied.
struct Condition {
    detail: ReasonDetail,
    unmet: bool,
    rule: Option<Rule>,
}

fn advance(
    r: &Rollout,
    policy: &PolicySnapshot,
    now: DateTime<Utc>,
    to_stage: StageIndex,
    reasons: &mut Vec<Reason>,
) {
    if r.plan.stage(to_stage).is_none() {
        reasons.push(Reason::new(
            ReasonDetail::NoSuchStage {
                requested: to_stage,
            },
            Effect::Deny,
            None,
        ));
        return;
    }
    if r.status == RolloutStatus::Running && r.position.is_some_and(|p| to_stage <= p) {
        reasons.push(Reason::new(
            ReasonDetail::AlreadyReached { stage: to_stage },
            Effect::Ok,
            None,
        ));
        return;
    }
    if r.status != RolloutStatus::Running {
        status_reason(r, reasons);
        if r.status == RolloutStatus::Draft {
            start(r, policy, now, reasons);
        }
        return;
    }
    let next = r.next_stage();
    if next != Some(to_stage) {
        reasons.push(Reason::new(
            ReasonDetail::NotNextStage {
                requested: to_stage,
                next,
            },
            Effect::Wait,
            None,
        ));
        return;
    }
    let Some(target) = r.plan.stage(to_stage) else {
        return;
    };

    let mut conditions: Vec<Condition> = Vec::new();

    // Approvals (R1 quorum over approvals still valid under R6).
    let request = r.open_request().filter(|q| q.to_stage == to_stage);
    let (valid, all) = match request {
        Some(req) => (
            req.valid_approvals(r.plan_revision, now),
            req.all_approvals(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let roles: Vec<_> = valid.iter().map(|a| a.roles.clone()).collect();
    let assignment = quorum::assign(&target.approvals, &roles);
    let quorum_rule = if assignment.is_satisfied() {
        Rule::R4
    } else {
        let all_roles: Vec<_> = all.iter().map(|a| a.roles.clone()).collect();
        if all.len() > valid.len() && quorum::assign(&target.approvals, &all_roles).is_satisfied() {
            Rule::R6
        } else {
            Rule::R4
        }
    };
    match request {
        None => conditions.push(Condition {
            detail: ReasonDetail::NoOpenRequest { to_stage },
            unmet: true,
            rule: Some(Rule::R4),
        }),
        Some(req) => conditions.push(Condition {
            detail: ReasonDetail::Approvals {
                request_id: req.id,
                requested_by: req.requested_by.clone(),
                plan_revision: r.plan_revision,
                not_counted: (req.approvals.len() - valid.len()) as u32,
            },
            unmet: false,
            rule: Some(Rule::R6),
        }),
    }
    for (i, q) in target.approvals.iter().enumerate() {
        let approved_by = assignment
            .counted
            .iter()
            .filter(|(_, rule)| *rule == i)
            .map(|(a, _)| Approver {
                id: valid[*a].approver.clone(),
                at: valid[*a].given_at,
            })
            .collect();
        let missing = assignment.missing[i];
        conditions.push(Condition {
            detail: ReasonDetail::Quorum {
                rule_index: i,
                roles: q.roles.iter().copied().collect(),
                required: q.count,
                approved_by,
                missing,
            },
            unmet: missing > 0,
            rule: Some(quorum_rule),
        });
    }

    // Soak in the current stage.
    if let Some(position) = r.position {
        let required = r.current_stage().map_or(0, |s| s.min_soak_seconds);
        let entered = r.stage_entered_at.unwrap_or(now);
        let soaked = (now - entered).num_seconds().max(0) as u64;
        conditions.push(Condition {
            detail: ReasonDetail::Soak {
                stage: position,
                required_seconds: required,
                soaked_seconds: soaked,
                remaining_seconds: required.saturating_sub(soaked),
            },
            unmet: soaked < required,
            rule: Some(Rule::R4),
        });
    }

    // Success and rollback criteria of the current stage.
    if let (Some(position), Some(stage)) = (r.position, r.current_stage()) {
        let kinds = stage
            .success_criteria
            .iter()
            .map(|c| (c, CriterionKind::Success))
            .chain(
                stage
                    .rollback_criteria
                    .iter()
                    .map(|c| (c, CriterionKind::Rollback)),
            );
        for (c, kind) in kinds {
            let e = evaluate(c, kind, &r.readings);
            let unmet = match kind {
                CriterionKind::Success => e.verdict != Verdict::Pass,
                CriterionKind::Rollback => e.is_breach(),
            };
            conditions.push(Condition {
                detail: ReasonDetail::Guardrail {
                    stage: position,
                    criterion: kind,
                    metric: e.metric,
                    comparator: e.comparator,
                    threshold: e.threshold.get(),
                    min_samples: e.min_samples,
                    value: e.value,
                    samples: e.samples,
                    verdict: e.verdict,
                },
                unmet,
                rule: Some(Rule::R4),
            });
        }
    }

    // Freeze windows (R9).
    if let Some(f) = freeze(policy, now) {
        conditions.push(Condition {
            detail: f,
            unmet: true,
            rule: Some(Rule::R9),
        });
    }

    // Waivers: granted deviations scoped to this stage, unexpired, unused.
    let usable: Vec<_> = r
        .deviations
        .values()
        .filter(|d| d.is_usable(r.position, now))
        .collect();
    for c in conditions {
        let waived = c
            .rule
            .is_some_and(|rule| usable.iter().any(|d| d.rules.contains(&rule)));
        // A missing request cannot be waived: `Advance` names a request.
        let waivable = !matches!(c.detail, ReasonDetail::NoOpenRequest { .. });
        let effect = match (c.unmet, waived && waivable) {
            (false, _) => Effect::Ok,
            (true, true) => Effect::Waived,
            (true, false) => Effect::Wait,
        };
        reasons.push(Reason::new(c.detail, effect, c.rule));
    }
}

/// Why a delivery tool should roll back now (Flagger's `rollback` hook): the
/// rollout was rolled back or aborted, or a rollback criterion of its current
/// stage is breached by the readings on record. Empty when none holds.
pub fn rollback_signals(r: &Rollout) -> Vec<Reason> {
    let mut signals = Vec::new();
    match r.status {
        RolloutStatus::RolledBack => signals.push(Reason::new(
            ReasonDetail::RolledBack {
                to_stage: r.position,
            },
            Effect::Ok,
            Some(Rule::R7),
        )),
        RolloutStatus::Aborted => {
            signals.push(Reason::new(ReasonDetail::Aborted, Effect::Ok, None));
        }
        _ => {}
    }
    if r.status.is_live() {
        if let (Some(position), Some(stage)) = (r.position, r.current_stage()) {
            for c in &stage.rollback_criteria {
                let e = evaluate(c, CriterionKind::Rollback, &r.readings);
                if e.is_breach() {
                    signals.push(Reason::new(
                        ReasonDetail::Guardrail {
                            stage: position,
                            criterion: CriterionKind::Rollback,
                            metric: e.metric,
                            comparator: e.comparator,
                            threshold: e.threshold.get(),
                            min_samples: e.min_samples,
                            value: e.value,
                            samples: e.samples,
                            verdict: e.verdict,
                        },
                        Effect::Ok,
                        Some(Rule::R4),
                    ));
                }
            }
        }
    }
    signals
}
