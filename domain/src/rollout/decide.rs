//! `decide`: checks a command against the state, the actor and the policy.
//!
//! Order of checks for every command on an existing rollout: R11 (team scope,
//! answered as "not found"), R10 (read-only roles), the command's role
//! permission, then lifecycle and rule checks.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};

use crate::context::Context;
use crate::error::{DomainError, Rule, UnmetPrecondition, ValidationErrors};
use crate::guardrail::{
    evaluate, CriterionKind, QueryEvaluation, Reading, ReadingSource, StageReadings, Verdict,
    CLOCK_LEEWAY_SECONDS,
};
use crate::plan::OnBreach;
use crate::plan::OnInconclusive;
use crate::values::{Actor, MetricName, Role, StageIndex};

use super::command::{title_error, RolloutCommand};
use super::event::{CountedApproval, RolloutEvent};
use super::quorum;
use super::state::{DeviationStatus, RequestStatus, Rollout, RolloutState, RolloutStatus};

const RELEASE: &[Role] = &[Role::ReleaseManager];
const OPERATE: &[Role] = &[Role::ReleaseManager, Role::Sre];
/// DESIGN: readings come from automation and SREs, never from the release
/// manager who wants the stage to pass.
const READINGS: &[Role] = &[Role::Service, Role::Sre];
const DEVIATION_REQUESTERS: &[Role] = &[Role::ReleaseManager, Role::Sre, Role::Approver];
const WRITERS: &[Role] = &[
    Role::ReleaseManager,
    Role::Approver,
    Role::Sre,
    Role::GovernanceAdmin,
];

fn require(actor: &Actor, roles: &[Role], action: &str) -> Result<(), DomainError> {
    if actor.has_any_role(roles) {
        Ok(())
    } else {
        Err(DomainError::Permission {
            actor: actor.id.clone(),
            action: action.to_owned(),
            needed: roles.to_vec(),
        })
    }
}

fn not_terminal(r: &Rollout, action: &str) -> Result<(), DomainError> {
    if r.status.is_terminal() {
        Err(DomainError::wrong_state(r.status, action))
    } else {
        Ok(())
    }
}

fn in_status(r: &Rollout, allowed: &[RolloutStatus], action: &str) -> Result<(), DomainError> {
    if allowed.contains(&r.status) {
        Ok(())
    } else {
        Err(DomainError::wrong_state(r.status, action))
    }
}

/// R9: transitions that raise exposure (start, resume; advance checks it among
/// its preconditions) wait while a freeze window is active.
fn not_frozen(ctx: &Context, action: &str) -> Result<(), DomainError> {
    match ctx.policy.is_frozen_at(ctx.now) {
        Some(freeze) => Err(DomainError::Frozen {
            action: action.to_owned(),
            freeze_id: freeze.id,
            until: freeze.ends_at.to_rfc3339(),
            reason: freeze.reason.clone(),
        }),
        None => Ok(()),
    }
}

fn required_text(errors: &mut ValidationErrors, field: &str, text: &str) {
    if text.trim().is_empty() {
        errors.push(field, "must not be empty");
    } else if text.len() > 10_000 {
        errors.push(field, "must be at most 10000 bytes");
    }
}

fn text(field: &str, value: &str) -> Result<(), DomainError> {
    let mut errors = ValidationErrors::default();
    required_text(&mut errors, field, value);
    Ok(errors.into_result(())?)
}

/// Decides one command. See the module documentation of [`crate::rollout`]
/// for who may issue which command.
pub fn decide(
    state: &RolloutState,
    cmd: RolloutCommand,
    ctx: &Context,
) -> Result<Vec<RolloutEvent>, DomainError> {
    let actor = &ctx.actor;
    let r = match (state.rollout(), &cmd) {
        (None, RolloutCommand::Create { .. }) => return create(cmd, ctx),
        (None, _) => return Err(DomainError::RolloutNotFound),
        (Some(r), _) => r,
    };
    if !actor.may_access(&r.team) {
        return Err(DomainError::RolloutNotFound);
    }
    if matches!(cmd, RolloutCommand::Create { .. }) {
        return Err(DomainError::AlreadyExists);
    }
    if actor.is_read_only() {
        return Err(DomainError::ReadOnly {
            actor: actor.id.clone(),
        });
    }
    let action = cmd.action();
    let by = actor.id.clone();
    let at = ctx.now;
    let policy_version = ctx.policy.version;

    match cmd {
        RolloutCommand::Create { .. } => Err(DomainError::AlreadyExists),

        RolloutCommand::RevisePlan { plan } => {
            require(actor, RELEASE, action)?;
            not_terminal(r, action)?;
            if let Some(pos) = r.position {
                if plan.stage(pos).is_none() {
                    return Err(DomainError::invalid(
                        "plan.stages",
                        format!("the revised plan must keep stage {pos}, where the rollout is"),
                    ));
                }
            }
            let invalidated = r.open_request().map_or(0, |req| {
                req.valid_approvals(r.plan_revision, at).len() as u32
            });
            let all_signed = plan
                .readiness_checklist()
                .iter()
                .all(|i| r.readiness_signed.contains_key(&i.key));
            let was_pre_start = matches!(r.status, RolloutStatus::Draft | RolloutStatus::Ready);
            let mut events = vec![RolloutEvent::PlanRevised {
                plan,
                plan_revision: r.plan_revision + 1,
                invalidated_approvals: invalidated,
                revised_by: by,
                at,
            }];
            if was_pre_start && all_signed {
                events.push(RolloutEvent::RolloutReady { at });
            }
            Ok(events)
        }

        RolloutCommand::SignOffReadiness { item_key } => {
            let item = r.plan.readiness_item(&item_key).ok_or_else(|| {
                DomainError::invalid("item_key", format!("no readiness item {item_key:?}"))
            })?;
            require(actor, &[item.owner_role], action)?;
            if r.readiness_signed.contains_key(&item.key) {
                return Err(DomainError::AlreadySignedOff { key: item_key });
            }
            in_status(r, &[RolloutStatus::Draft], action)?;
            let mut events = vec![RolloutEvent::ReadinessSignedOff {
                item_key: item.key.clone(),
                role: item.owner_role,
                signed_by: by,
                at,
            }];
            if r.unsigned_items().len() == 1 {
                events.push(RolloutEvent::RolloutReady { at });
            }
            Ok(events)
        }

        RolloutCommand::Start => {
            require(actor, RELEASE, action)?;
            in_status(r, &[RolloutStatus::Ready], action)?;
            not_frozen(ctx, action)?;
            Ok(vec![RolloutEvent::RolloutStarted {
                stage: StageIndex::FIRST,
                plan_revision: r.plan_revision,
                started_by: by,
                policy_version,
                at,
            }])
        }

        RolloutCommand::RequestAdvance { request_id } => {
            require(actor, RELEASE, action)?;
            in_status(r, &[RolloutStatus::Running], action)?;
            if r.requests.contains_key(&request_id) {
                return Err(DomainError::DuplicateId(request_id.to_string()));
            }
            if let Some(open) = r.open_request {
                return Err(DomainError::RequestAlreadyOpen { open });
            }
            let to_stage = r.next_stage().ok_or(DomainError::NoNextStage {
                at: r.position.unwrap_or(StageIndex::FIRST),
            })?;
            Ok(vec![RolloutEvent::AdvanceRequested {
                request_id,
                from_stage: r.position,
                to_stage,
                plan_revision: r.plan_revision,
                requested_by: by,
                policy_version,
                at,
            }])
        }

        RolloutCommand::Approve {
            request_id,
            comment,
        } => {
            let (req, named) = approvable(r, actor, request_id, action)?;
            let already = req
                .valid_approvals(r.plan_revision, at)
                .iter()
                .any(|a| a.approver == actor.id);
            if already {
                return Err(DomainError::DuplicateApproval {
                    actor: by,
                    request_id,
                });
            }
            let validity = Duration::seconds(ctx.policy.approval_validity_seconds.max(0));
            Ok(vec![RolloutEvent::AdvanceApproved {
                request_id,
                approver: by,
                roles: actor.roles.intersection(&named).copied().collect(),
                comment: comment.filter(|c| !c.trim().is_empty()),
                plan_revision: r.plan_revision,
                expires_at: at
                    .checked_add_signed(validity)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC),
                policy_version,
                at,
            }])
        }

        RolloutCommand::Reject {
            request_id,
            comment,
        } => {
            let (_, named) = approvable(r, actor, request_id, action)?;
            text("comment", &comment)?;
            Ok(vec![RolloutEvent::AdvanceRejected {
                request_id,
                rejected_by: by,
                roles: actor.roles.intersection(&named).copied().collect(),
                comment,
                plan_revision: r.plan_revision,
                policy_version,
                at,
            }])
        }

        RolloutCommand::WithdrawRequest { request_id } => {
            require(actor, RELEASE, action)?;
            not_terminal(r, action)?;
            open_request(r, request_id)?;
            Ok(vec![RolloutEvent::AdvanceRequestWithdrawn {
                request_id,
                withdrawn_by: by,
                at,
            }])
        }

        RolloutCommand::Advance {
            request_id,
            inconclusive_override,
        } => {
            require(actor, RELEASE, action)?;
            in_status(r, &[RolloutStatus::Running], action)?;
            open_request(r, request_id)?;
            if let Some(why) = &inconclusive_override {
                text("inconclusive_override", why)?;
            }
            advance(r, request_id, inconclusive_override, ctx)
        }

        RolloutCommand::RecordReadings { readings } => {
            require(actor, READINGS, action)?;
            in_status(
                r,
                &[
                    RolloutStatus::Running,
                    RolloutStatus::Paused,
                    RolloutStatus::RolledBack,
                ],
                action,
            )?;
            let mut errors = ValidationErrors::default();
            if readings.is_empty() {
                errors.push("readings", "at least one reading is required");
            }
            for (i, reading) in readings.iter().enumerate() {
                if !reading.value.is_finite() {
                    errors.push(format!("readings[{i}].value"), "must be a finite number");
                }
                check_time(
                    &mut errors,
                    r,
                    at,
                    &format!("readings[{i}].observed_at"),
                    reading.observed_at,
                );
            }
            errors.into_result(())?;
            let mut all = r.readings.clone();
            all.record(&readings, at, |_| true);
            let event = RolloutEvent::ReadingsRecorded {
                stage: r.position,
                readings,
                source: ReadingSource::Posted,
                evaluations: Vec::new(),
                recorded_by: by,
                at,
            };
            react(r, event, &all, ctx)
        }

        RolloutCommand::RecordEvaluation { evaluations } => {
            if !actor.is_system() {
                return Err(DomainError::SystemOnly {
                    actor: by,
                    action: action.to_owned(),
                });
            }
            in_status(r, &[RolloutStatus::Running], action)?;
            let stage = r
                .current_stage()
                .ok_or_else(|| DomainError::wrong_state("at 0 % exposure", action))?;
            let mut errors = ValidationErrors::default();
            if evaluations.is_empty() {
                errors.push("evaluations", "at least one evaluation is required");
            }
            for (i, e) in evaluations.iter().enumerate() {
                check_evaluation(&mut errors, r, stage, at, i, e);
            }
            errors.into_result(())?;
            not_yet_evaluated(r, &evaluations)?;
            let mut all = r.readings.clone();
            all.record_evaluations(&evaluations, at, stage);
            let event = RolloutEvent::ReadingsRecorded {
                stage: r.position,
                readings: Vec::new(),
                source: ReadingSource::Prometheus,
                evaluations,
                recorded_by: by,
                at,
            };
            react(r, event, &all, ctx)
        }

        RolloutCommand::Pause { reason } => {
            require(actor, OPERATE, action)?;
            text("reason", &reason)?;
            in_status(r, &[RolloutStatus::Running], action)?;
            Ok(vec![RolloutEvent::Paused {
                reason,
                automatic: false,
                paused_by: by,
                policy_version,
                at,
            }])
        }

        RolloutCommand::Resume => {
            require(actor, OPERATE, action)?;
            in_status(
                r,
                &[RolloutStatus::Paused, RolloutStatus::RolledBack],
                action,
            )?;
            not_frozen(ctx, action)?;
            Ok(vec![RolloutEvent::Resumed {
                stage: r.position,
                resumed_by: by,
                policy_version,
                at,
            }])
        }

        RolloutCommand::Rollback { to_stage, reason } => {
            if !actor.has_any_role(OPERATE) {
                return Err(DomainError::RollbackNotAllowed { actor: by });
            }
            if reason.trim().is_empty() {
                return Err(DomainError::RollbackReasonMissing);
            }
            text("reason", &reason)?;
            in_status(
                r,
                &[
                    RolloutStatus::Running,
                    RolloutStatus::Paused,
                    RolloutStatus::RolledBack,
                ],
                action,
            )?;
            let Some(from) = r.position else {
                return Err(DomainError::wrong_state("at 0 % exposure", action));
            };
            if let Some(target) = to_stage {
                if target >= from {
                    return Err(DomainError::invalid(
                        "to_stage",
                        format!("{target} must be an earlier stage than the current stage {from}"),
                    ));
                }
            }
            Ok(vec![RolloutEvent::RolledBack {
                from_stage: Some(from),
                to_stage,
                reason,
                automatic: false,
                rolled_back_by: by,
                plan_revision: r.plan_revision,
                policy_version,
                at,
            }])
        }

        RolloutCommand::Complete => {
            require(actor, RELEASE, action)?;
            in_status(r, &[RolloutStatus::Running], action)?;
            let last = r.plan.last_stage();
            match r.position {
                Some(p) if p == last => Ok(vec![RolloutEvent::RolloutCompleted {
                    stage: p,
                    completed_by: by,
                    policy_version,
                    at,
                }]),
                other => Err(DomainError::NotAtLastStage {
                    at: other.map_or_else(|| "0 %".to_owned(), |p| format!("stage {p}")),
                    last,
                }),
            }
        }

        RolloutCommand::Abort { reason } => {
            require(actor, RELEASE, action)?;
            text("reason", &reason)?;
            not_terminal(r, action)?;
            Ok(vec![RolloutEvent::RolloutAborted {
                reason,
                aborted_by: by,
                policy_version,
                at,
            }])
        }

        RolloutCommand::RequestDeviation {
            deviation_id,
            rules,
            justification,
            expires_at,
        } => {
            require(actor, DEVIATION_REQUESTERS, action)?;
            not_terminal(r, action)?;
            let mut errors = ValidationErrors::default();
            if rules.is_empty() {
                errors.push("rules", "name at least one rule to waive");
            }
            for (i, rule) in rules.iter().enumerate() {
                if !rule.is_waivable() {
                    errors.push(
                        format!("rules[{i}]"),
                        format!("{} cannot be waived (only R4, R6 and R9 can)", rule.id()),
                    );
                }
            }
            required_text(&mut errors, "justification", &justification);
            if expires_at <= at {
                errors.push("expires_at", "must be in the future");
            }
            errors.into_result(())?;
            if r.deviations.contains_key(&deviation_id) {
                return Err(DomainError::DuplicateId(deviation_id.to_string()));
            }
            let rules: Vec<Rule> = rules
                .into_iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            Ok(vec![RolloutEvent::DeviationRequested {
                deviation_id,
                rules,
                justification,
                expires_at,
                stage: r.position,
                requested_by: by,
                policy_version,
                at,
            }])
        }

        RolloutCommand::GrantDeviation {
            deviation_id,
            comment,
        } => {
            let d = decidable_deviation(r, actor, deviation_id, ctx, action)?;
            if d.requested_by == actor.id {
                return Err(DomainError::SelfGrantedDeviation {
                    actor: by,
                    deviation_id,
                });
            }
            Ok(vec![RolloutEvent::DeviationGranted {
                deviation_id,
                comment,
                granted_by: by,
                policy_version,
                at,
            }])
        }

        RolloutCommand::DenyDeviation {
            deviation_id,
            comment,
        } => {
            decidable_deviation(r, actor, deviation_id, ctx, action)?;
            text("comment", &comment)?;
            Ok(vec![RolloutEvent::DeviationDenied {
                deviation_id,
                comment,
                denied_by: by,
                policy_version,
                at,
            }])
        }

        RolloutCommand::RecordDecision {
            decision_id,
            title,
            rationale,
            alternatives,
            outcome,
        } => {
            require(actor, WRITERS, action)?;
            let mut errors = ValidationErrors::default();
            if let Some(msg) = title_error(&title) {
                errors.push("title", msg);
            }
            required_text(&mut errors, "rationale", &rationale);
            required_text(&mut errors, "outcome", &outcome);
            for (i, alt) in alternatives.iter().enumerate() {
                required_text(&mut errors, &format!("alternatives[{i}]"), alt);
            }
            errors.into_result(())?;
            if r.decision_ids.contains(&decision_id) {
                return Err(DomainError::DuplicateId(decision_id.to_string()));
            }
            Ok(vec![RolloutEvent::DecisionRecorded {
                decision_id,
                title,
                rationale,
                alternatives,
                outcome,
                stage: r.position,
                decided_by: by,
                policy_version,
                at,
            }])
        }

        RolloutCommand::AddNote { audience, text: t } => {
            require(actor, RELEASE, action)?;
            text("text", &t)?;
            Ok(vec![RolloutEvent::NoteAdded {
                audience,
                text: t,
                stage: r.position,
                author: by,
                at,
            }])
        }

        RolloutCommand::Annotate {
            annotation_id,
            about,
            text: t,
        } => {
            require(actor, WRITERS, action)?;
            text("text", &t)?;
            if let Some(about) = &about {
                text("about", about)?;
            }
            if r.annotation_ids.contains(&annotation_id) {
                return Err(DomainError::DuplicateId(annotation_id.to_string()));
            }
            Ok(vec![RolloutEvent::Annotated {
                annotation_id,
                about,
                text: t,
                author: by,
                at,
            }])
        }
    }
}

fn create(cmd: RolloutCommand, ctx: &Context) -> Result<Vec<RolloutEvent>, DomainError> {
    let RolloutCommand::Create {
        id,
        feature_key,
        title,
        team,
        plan,
    } = cmd
    else {
        return Err(DomainError::RolloutNotFound);
    };
    let actor = &ctx.actor;
    if !actor.may_access(&team) {
        return Err(DomainError::TeamNotAllowed {
            actor: actor.id.clone(),
            team,
        });
    }
    if actor.is_read_only() {
        return Err(DomainError::ReadOnly {
            actor: actor.id.clone(),
        });
    }
    require(actor, RELEASE, "create a rollout")?;
    if let Some(msg) = title_error(&title) {
        return Err(DomainError::invalid("title", msg));
    }
    let ready = plan.readiness_checklist().is_empty();
    let mut events = vec![RolloutEvent::RolloutCreated {
        rollout_id: id,
        feature_key,
        title,
        team,
        plan,
        plan_revision: 1,
        created_by: actor.id.clone(),
        at: ctx.now,
    }];
    if ready {
        events.push(RolloutEvent::RolloutReady { at: ctx.now });
    }
    Ok(events)
}

fn open_request(
    r: &Rollout,
    request_id: crate::values::RequestId,
) -> Result<&super::state::AdvanceRequest, DomainError> {
    let req = r
        .requests
        .get(&request_id)
        .ok_or(DomainError::UnknownRequest(request_id))?;
    if req.status != RequestStatus::Open {
        return Err(DomainError::RequestClosed {
            request_id,
            status: req.status.as_str().to_owned(),
        });
    }
    Ok(req)
}

/// Checks shared by approve and reject: the request is open, the actor holds a
/// named role (R1) and did not request it (R2). Returns the named roles.
fn approvable<'a>(
    r: &'a Rollout,
    actor: &Actor,
    request_id: crate::values::RequestId,
    action: &str,
) -> Result<(&'a super::state::AdvanceRequest, BTreeSet<Role>), DomainError> {
    not_terminal(r, action)?;
    let req = open_request(r, request_id)?;
    let named: BTreeSet<Role> = r
        .plan
        .stage(req.to_stage)
        .map(|s| {
            s.approvals
                .iter()
                .flat_map(|q| q.roles.iter().copied())
                .collect()
        })
        .unwrap_or_default();
    if !actor.has_any_role(&named) {
        return Err(DomainError::NotAQuorumRole {
            actor: actor.id.clone(),
            named: named.into_iter().collect(),
        });
    }
    if req.requested_by == actor.id {
        return Err(DomainError::SelfApproval {
            actor: actor.id.clone(),
            request_id,
        });
    }
    Ok((req, named))
}

fn decidable_deviation<'a>(
    r: &'a Rollout,
    actor: &Actor,
    deviation_id: crate::values::DeviationId,
    ctx: &Context,
    action: &str,
) -> Result<&'a super::state::Deviation, DomainError> {
    let granters = &ctx.policy.deviation_granter_roles;
    if !actor.has_any_role(granters) {
        return Err(DomainError::NotAGranter {
            actor: actor.id.clone(),
            granters: granters.iter().copied().collect(),
        });
    }
    not_terminal(r, action)?;
    let d = r
        .deviations
        .get(&deviation_id)
        .ok_or(DomainError::UnknownDeviation(deviation_id))?;
    if d.status != DeviationStatus::Requested {
        return Err(DomainError::DeviationUnavailable {
            deviation_id,
            status: d.status.as_str().to_owned(),
        });
    }
    if d.expires_at <= ctx.now {
        return Err(DomainError::DeviationUnavailable {
            deviation_id,
            status: "expired".to_owned(),
        });
    }
    Ok(d)
}

/// R4 / R6 / R9: every precondition of an advance, each waivable by a granted
/// deviation naming exactly its rule.
fn advance(
    r: &Rollout,
    request_id: crate::values::RequestId,
    inconclusive_override: Option<String>,
    ctx: &Context,
) -> Result<Vec<RolloutEvent>, DomainError> {
    let now = ctx.now;
    let req = &r.requests[&request_id];
    let target = r.plan.stage(req.to_stage).ok_or(DomainError::NoNextStage {
        at: r.position.unwrap_or(StageIndex::FIRST),
    })?;
    let mut unmet: Vec<UnmetPrecondition> = Vec::new();
    let mut unmet_if = |rule: Rule, condition: &str, detail: String| {
        unmet.push(UnmetPrecondition {
            rule,
            condition: condition.to_owned(),
            detail,
        });
    };

    // Approvals (R1 quorum, R6 validity).
    let valid = req.valid_approvals(r.plan_revision, now);
    let roles: Vec<_> = valid.iter().map(|a| a.roles.clone()).collect();
    let assignment = quorum::assign(&target.approvals, &roles);
    if !assignment.is_satisfied() {
        let missing: Vec<String> = target
            .approvals
            .iter()
            .zip(&assignment.missing)
            .filter(|(_, m)| **m > 0)
            .map(|(q, m)| {
                format!(
                    "{m} more of {}",
                    q.roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join("/")
                )
            })
            .collect();
        let all: Vec<_> = req
            .all_approvals()
            .iter()
            .map(|a| a.roles.clone())
            .collect();
        // The quorum is short of valid approvals; if every approval ever given
        // would have met it, the shortfall is theirs going stale (R6).
        if quorum::assign(&target.approvals, &all).is_satisfied() {
            unmet_if(
                Rule::R6,
                "approvals",
                format!(
                    "approvals expired or were given under an earlier plan revision (now {}); needs {}",
                    r.plan_revision,
                    missing.join(", ")
                ),
            );
        } else {
            unmet_if(
                Rule::R4,
                "approvals",
                format!("quorum not met: needs {}", missing.join(", ")),
            );
        }
    }

    // Soak time in the current stage.
    let min_soak = r.current_stage().map_or(0, |s| s.min_soak_seconds);
    let entered = r.stage_entered_at.unwrap_or(now);
    let soaked = (now - entered).num_seconds().max(0) as u64;
    if soaked < min_soak {
        unmet_if(
            Rule::R4,
            "soak",
            format!("soaked {soaked}s of the required {min_soak}s"),
        );
    }

    // Success and rollback criteria of the current stage.
    let mut evaluations = Vec::new();
    let mut inconclusive = Vec::new();
    if let Some(stage) = r.current_stage() {
        for c in &stage.success_criteria {
            let e = evaluate(c, CriterionKind::Success, &r.readings);
            match e.verdict {
                Verdict::Pass => {}
                Verdict::Fail => unmet_if(Rule::R4, "success_criteria", e.describe()),
                Verdict::Inconclusive => inconclusive.push(e.describe()),
            }
            evaluations.push(e);
        }
        for c in &stage.rollback_criteria {
            let e = evaluate(c, CriterionKind::Rollback, &r.readings);
            if e.is_breach() {
                unmet_if(
                    Rule::R4,
                    "rollback_criteria",
                    format!("breached: {}", e.describe()),
                );
            }
        }
    }
    let override_used = !inconclusive.is_empty() && inconclusive_override.is_some();
    if !inconclusive.is_empty() && !override_used {
        unmet_if(
            Rule::R4,
            "success_criteria",
            format!(
                "inconclusive: {}; proceed only with an explicit inconclusive_override rationale",
                inconclusive.join("; ")
            ),
        );
    }

    // Freeze windows.
    if let Some(freeze) = ctx.policy.is_frozen_at(now) {
        unmet_if(
            Rule::R9,
            "freeze",
            format!(
                "freeze {} is active until {}: {}",
                freeze.id,
                freeze.ends_at.to_rfc3339(),
                freeze.reason
            ),
        );
    }

    // Waivers: granted deviations scoped to this stage, unexpired, unused.
    let usable: Vec<_> = r
        .deviations
        .values()
        .filter(|d| d.is_usable(r.position, now))
        .collect();
    let (waived, blocking): (Vec<_>, Vec<_>) = unmet
        .into_iter()
        .partition(|u| usable.iter().any(|d| d.rules.contains(&u.rule)));
    if !blocking.is_empty() {
        return Err(DomainError::AdvanceBlocked {
            request_id,
            unmet: blocking,
        });
    }
    let deviations_used = usable
        .iter()
        .filter(|d| waived.iter().any(|u| d.rules.contains(&u.rule)))
        .map(|d| d.id)
        .collect();
    let counted_approvals = assignment
        .counted
        .iter()
        .map(|(a, rule)| CountedApproval {
            approver: valid[*a].approver.clone(),
            rule: *rule,
        })
        .collect();
    Ok(vec![RolloutEvent::Advanced {
        request_id,
        from_stage: r.position,
        to_stage: req.to_stage,
        plan_revision: r.plan_revision,
        counted_approvals,
        evaluations,
        waived,
        deviations_used,
        inconclusive_override: if override_used {
            inconclusive_override
        } else {
            None
        },
        advanced_by: ctx.actor.id.clone(),
        policy_version: ctx.policy.version,
        at: now,
    }])
}

/// R4 input: an observation time at most [`CLOCK_LEEWAY_SECONDS`] ahead of
/// `now` and not (beyond the leeway) before the current stage was entered.
fn check_time(
    errors: &mut ValidationErrors,
    r: &Rollout,
    now: DateTime<Utc>,
    field: &str,
    time: DateTime<Utc>,
) {
    let leeway = Duration::seconds(CLOCK_LEEWAY_SECONDS);
    if time > now + leeway {
        errors.push(
            field,
            format!(
                "{} is more than {CLOCK_LEEWAY_SECONDS} s ahead of rollgate's clock ({})",
                time.to_rfc3339(),
                now.to_rfc3339()
            ),
        );
    }
    if let Some(entered) = r.stage_entered_at {
        if time < entered - leeway {
            errors.push(
                field,
                format!(
                    "{} is before the current stage was entered ({})",
                    time.to_rfc3339(),
                    entered.to_rfc3339()
                ),
            );
        }
    }
}

fn check_evaluation(
    errors: &mut ValidationErrors,
    r: &Rollout,
    stage: &crate::plan::Stage,
    now: DateTime<Utc>,
    i: usize,
    e: &QueryEvaluation,
) {
    let path = format!("evaluations[{i}]");
    if stage.queries_for(&e.metric).is_none() {
        errors.push(
            format!("{path}.metric"),
            format!(
                "no query criterion of the current stage measures {}",
                e.metric
            ),
        );
    }
    if e.query.trim().is_empty() {
        errors.push(format!("{path}.query"), "must not be empty");
    }
    for (field, value) in [("value", e.value), ("baseline_value", e.baseline_value)] {
        if value.is_some_and(|v| !v.is_finite()) {
            errors.push(format!("{path}.{field}"), "must be a finite number");
        }
    }
    match &e.inconclusive {
        Some(why) => required_text(errors, &format!("{path}.inconclusive"), why),
        None if e.value.is_none() => errors.push(
            format!("{path}.value"),
            "is required unless the evaluation says why it is inconclusive",
        ),
        None => {}
    }
    check_time(
        errors,
        r,
        now,
        &format!("{path}.evaluated_at"),
        e.evaluated_at,
    );
}

/// Each scheduled interval is recorded once per metric: an evaluation whose
/// `evaluated_at` (its scheduled instant, `entered_at + k × interval`) is not
/// after the latest one recorded for its metric at this stage is refused as a
/// whole batch (409, nothing written), and so is a batch naming a metric twice
/// at one instant. Refusing rather than ignoring keeps the outcome visible to
/// the evaluator (a restart or a second instance learns that the interval is
/// done) and never answers "recorded" for something that was not.
fn not_yet_evaluated(r: &Rollout, evaluations: &[QueryEvaluation]) -> Result<(), DomainError> {
    let mut latest: BTreeMap<&MetricName, DateTime<Utc>> = r
        .readings
        .evaluations()
        .iter()
        .map(|(m, e)| (m, e.latest.evaluated_at))
        .collect();
    for e in evaluations {
        if let Some(seen) = latest.get(&e.metric) {
            if e.evaluated_at <= *seen {
                return Err(DomainError::AlreadyEvaluated {
                    metric: e.metric.clone(),
                    evaluated_at: e.evaluated_at,
                    latest: *seen,
                });
            }
        }
        latest.insert(&e.metric, e.evaluated_at);
    }
    Ok(())
}

/// Records a batch of readings or evaluations (`recorded`), then reacts to the
/// current stage's criteria judged on `all` (the state's readings with the
/// batch folded in): a breached rollback criterion rolls back to the previous
/// stage (or 0 %) when the stage says `rollback`, otherwise pauses a running
/// rollout; without a breach, a query metric that reached the stage's
/// `inconclusive_limit` of consecutive inconclusive evaluations pauses a
/// running rollout when the stage says `pause`.
fn react(
    r: &Rollout,
    recorded: RolloutEvent,
    all: &StageReadings,
    ctx: &Context,
) -> Result<Vec<RolloutEvent>, DomainError> {
    let at = ctx.now;
    let by = ctx.actor.id.clone();
    let mut events = vec![recorded];
    let (Some(position), Some(stage)) = (r.position, r.current_stage()) else {
        return Ok(events);
    };
    let breaches: Vec<_> = stage
        .rollback_criteria
        .iter()
        .map(|c| (c, evaluate(c, CriterionKind::Rollback, all)))
        .filter(|(_, e)| e.is_breach())
        .collect();
    if breaches.is_empty() {
        events.extend(inconclusive_pause(r, stage, all, ctx));
        return Ok(events);
    }
    let acts = match stage.on_breach {
        OnBreach::Rollback => true,
        OnBreach::Pause => r.status == RolloutStatus::Running,
    };
    if !acts {
        return Ok(events);
    }
    let reason = format!(
        "guardrail breached: {}",
        breaches
            .iter()
            .map(|(_, e)| e.describe())
            .collect::<Vec<_>>()
            .join("; ")
    );
    for (c, e) in &breaches {
        let observed_at = match &c.queries {
            Some(_) => all.evaluation(&c.metric).map(|m| m.latest.evaluated_at),
            None => all.latest(&c.metric).map(|r| r.observed_at),
        };
        if let (Some(value), Some(observed_at)) = (e.value, observed_at) {
            events.push(RolloutEvent::GuardrailBreached {
                stage: position,
                criterion: (*c).clone(),
                reading: Reading {
                    metric: c.metric.clone(),
                    value,
                    samples: e.samples,
                    observed_at,
                },
                action: stage.on_breach,
                policy_version: ctx.policy.version,
                at,
            });
        }
    }
    events.push(match stage.on_breach {
        OnBreach::Rollback => RolloutEvent::RolledBack {
            from_stage: Some(position),
            to_stage: position.get().checked_sub(1).map(StageIndex::new),
            reason,
            automatic: true,
            rolled_back_by: by,
            plan_revision: r.plan_revision,
            policy_version: ctx.policy.version,
            at,
        },
        OnBreach::Pause => RolloutEvent::Paused {
            reason,
            automatic: true,
            paused_by: by,
            policy_version: ctx.policy.version,
            at,
        },
    });
    Ok(events)
}

/// The automatic pause after too many consecutive inconclusive evaluations.
fn inconclusive_pause(
    r: &Rollout,
    stage: &crate::plan::Stage,
    all: &StageReadings,
    ctx: &Context,
) -> Option<RolloutEvent> {
    let policy = stage.inconclusive?;
    if policy.action != OnInconclusive::Pause || r.status != RolloutStatus::Running {
        return None;
    }
    let stuck: Vec<String> = all
        .evaluations()
        .iter()
        .filter(|(_, m)| m.consecutive_inconclusive >= policy.limit)
        .map(|(metric, m)| {
            format!(
                "{metric} ({}): {}",
                m.consecutive_inconclusive,
                m.latest
                    .inconclusive
                    .clone()
                    .unwrap_or_else(|| "too few samples or no baseline".to_owned())
            )
        })
        .collect();
    if stuck.is_empty() {
        return None;
    }
    Some(RolloutEvent::Paused {
        reason: format!(
            "{} consecutive inconclusive evaluations: {}",
            policy.limit,
            stuck.join("; ")
        ),
        automatic: true,
        paused_by: ctx.actor.id.clone(),
        policy_version: ctx.policy.version,
        at: ctx.now,
    })
}
