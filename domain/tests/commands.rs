//! Every rollout command: an accepted case (events and resulting state) and a
//! refused case.

mod common;

use common::*;
use rollgate_domain::rollout::{
    NoteAudience, RequestStatus, RolloutCommand as C, RolloutEvent as E, RolloutStatus,
};
use rollgate_domain::{
    evolve, AnnotationId, DecisionId, DeviationId, DomainError, ErrorKind, FeatureKey,
    ReadinessKey, Role, RolloutState, Rule, StageIndex,
};
use uuid::Uuid;

fn reason(s: &str) -> String {
    s.to_owned()
}

// --- Create -------------------------------------------------------------------

#[test]
fn create_emits_created_in_draft() {
    let state = given(&[])
        .when(create_cmd(test_plan()), &ctx(&rita(), 0))
        .then(&[E::RolloutCreated {
            rollout_id: rollout_id(),
            feature_key: FeatureKey::parse("checkout-one-click").unwrap(),
            title: "One-click checkout".into(),
            team: team(),
            plan: test_plan(),
            plan_revision: 1,
            created_by: id("rita"),
            at: at(0),
        }]);
    let r = state.rollout().unwrap();
    assert_eq!(r.status, RolloutStatus::Draft);
    assert_eq!(r.exposure().get(), 0.0);
    assert_eq!(r.version, 1);
}

#[test]
fn create_with_an_empty_checklist_is_ready_at_once() {
    let plan = test_plan_with(|v| v["readiness_checklist"] = serde_json::json!([]));
    given(&[])
        .when(create_cmd(plan), &ctx(&rita(), 0))
        .then_types(&["RolloutCreated", "RolloutReady"]);
}

#[test]
fn create_is_refused_without_release_manager_or_twice() {
    given(&[])
        .when(create_cmd(test_plan()), &ctx(&ann(), 0))
        .then_error(Rule::Permission);
    let s = Scenario::created();
    given_scenario(&s)
        .when(create_cmd(test_plan()), &ctx(&rita(), 0))
        .then_error_kind(ErrorKind::Conflict);
}

#[test]
fn commands_on_a_missing_rollout_are_not_found() {
    given(&[])
        .when(C::Start, &ctx(&rita(), 0))
        .then_error_kind(ErrorKind::NotFound);
}

// --- RevisePlan ---------------------------------------------------------------

#[test]
fn revise_plan_bumps_the_revision() {
    let s = Scenario::approved();
    let events = given_scenario(&s)
        .when(C::RevisePlan { plan: test_plan() }, &ctx(&rita(), 100))
        .events();
    assert!(matches!(
        events[..],
        [E::PlanRevised {
            plan_revision: 2,
            invalidated_approvals: 3,
            ..
        }]
    ));
}

#[test]
fn revise_plan_before_start_keeps_or_drops_readiness() {
    // ready; a revision adding a new item sends it back to draft
    let s = Scenario::ready();
    let plan = test_plan_with(|v| {
        v["readiness_checklist"].as_array_mut().unwrap().push(
            serde_json::json!({"key": "faq", "title": "FAQ", "owner_role": "release_manager"}),
        )
    });
    let state = given_scenario(&s)
        .when(C::RevisePlan { plan }, &ctx(&rita(), 10))
        .then_types(&["PlanRevised"])
        .iter()
        .fold(s.state.clone(), evolve);
    assert_eq!(state.status(), Some(RolloutStatus::Draft));
    // the same plan again: still all signed
    given_scenario(&s)
        .when(C::RevisePlan { plan: test_plan() }, &ctx(&rita(), 10))
        .then_types(&["PlanRevised", "RolloutReady"]);
}

#[test]
fn revise_plan_refused_when_terminal_or_dropping_the_current_stage() {
    let aborted = Scenario::running().run(
        &rita(),
        5,
        C::Abort {
            reason: reason("cancelled"),
        },
    );
    let e = given_scenario(&aborted)
        .when(C::RevisePlan { plan: test_plan() }, &ctx(&rita(), 10))
        .then_error_kind(ErrorKind::Conflict);
    assert_eq!(e.to_string(), "rollout is aborted: cannot revise the plan");
    let s = Scenario::at_stage_1();
    let one_stage = test_plan_with(|v| {
        let stages = v["stages"].as_array_mut().unwrap();
        stages.truncate(1);
    });
    given_scenario(&s)
        .when(C::RevisePlan { plan: one_stage }, &ctx(&rita(), 4000))
        .then_invalid("plan.stages");
}

// --- SignOffReadiness ------------------------------------------------------------

#[test]
fn sign_off_readiness_then_ready_when_all_signed() {
    let s = Scenario::created().run(
        &rita(),
        0,
        C::SignOffReadiness {
            item_key: "qa".into(),
        },
    );
    given_scenario(&s)
        .when(
            C::SignOffReadiness {
                item_key: "runbook".into(),
            },
            &ctx(&sam(), 5),
        )
        .then(&[
            E::ReadinessSignedOff {
                item_key: ReadinessKey::parse("runbook").unwrap(),
                role: Role::Sre,
                signed_by: id("sam"),
                at: at(5),
            },
            E::RolloutReady { at: at(5) },
        ]);
}

#[test]
fn sign_off_readiness_needs_the_owner_role_a_known_item_and_once() {
    let s = Scenario::created();
    given_scenario(&s)
        .when(
            C::SignOffReadiness {
                item_key: "runbook".into(),
            },
            &ctx(&rita(), 5),
        )
        .then_error(Rule::Permission);
    given_scenario(&s)
        .when(
            C::SignOffReadiness {
                item_key: "nope".into(),
            },
            &ctx(&rita(), 5),
        )
        .then_invalid("item_key");
    let signed = s.run(
        &rita(),
        0,
        C::SignOffReadiness {
            item_key: "qa".into(),
        },
    );
    given_scenario(&signed)
        .when(
            C::SignOffReadiness {
                item_key: "qa".into(),
            },
            &ctx(&rita(), 5),
        )
        .then_error_kind(ErrorKind::Conflict);
}

// --- Start --------------------------------------------------------------------------

#[test]
fn start_runs_stage_zero() {
    let s = Scenario::ready();
    let state = given_scenario(&s)
        .when(C::Start, &ctx(&rita(), 7))
        .then(&[E::RolloutStarted {
            stage: StageIndex::new(0),
            plan_revision: 1,
            started_by: id("rita"),
            policy_version: 0,
            at: at(7),
        }]);
    let r = state.rollout().unwrap();
    assert_eq!(r.status, RolloutStatus::Running);
    assert_eq!(r.position, Some(StageIndex::new(0)));
    assert_eq!(r.stage_entered_at, Some(at(7)));
}

#[test]
fn start_refused_in_draft() {
    let s = Scenario::created();
    let e = given_scenario(&s)
        .when(C::Start, &ctx(&rita(), 7))
        .then_error_kind(ErrorKind::Conflict);
    assert_eq!(e.rule(), None);
    assert_eq!(e.to_string(), "rollout is draft: cannot start");
}

// --- RequestAdvance -------------------------------------------------------------------

#[test]
fn request_advance_asks_for_the_next_stage() {
    let s = Scenario::running();
    given_scenario(&s)
        .when(C::RequestAdvance { request_id: rid(1) }, &ctx(&rita(), 10))
        .then(&[E::AdvanceRequested {
            request_id: rid(1),
            from_stage: Some(StageIndex::new(0)),
            to_stage: StageIndex::new(1),
            plan_revision: 1,
            requested_by: id("rita"),
            policy_version: 0,
            at: at(10),
        }]);
}

#[test]
fn request_advance_one_at_a_time_and_not_past_the_last_stage() {
    let s = Scenario::requested();
    given_scenario(&s)
        .when(C::RequestAdvance { request_id: rid(2) }, &ctx(&rita(), 11))
        .then_error_kind(ErrorKind::Conflict);
    given_scenario(&s)
        .when(C::RequestAdvance { request_id: rid(2) }, &ctx(&ann(), 11))
        .then_error(Rule::Permission);
    let plan = test_plan_with(|v| {
        v["stages"].as_array_mut().unwrap().truncate(1);
        v["readiness_checklist"] = serde_json::json!([]);
    });
    let single = Scenario::new()
        .run(&rita(), 0, create_cmd(plan))
        .run(&rita(), 0, C::Start);
    given_scenario(&single)
        .when(C::RequestAdvance { request_id: rid(2) }, &ctx(&rita(), 11))
        .then_error_kind(ErrorKind::Conflict);
}

// --- Approve / Reject / Withdraw ----------------------------------------------------------

#[test]
fn approve_records_the_approval() {
    let s = Scenario::requested().approve(&ann(), 1, 20);
    let r = s.state.rollout().unwrap();
    assert_eq!(r.requests[&rid(1)].approvals.len(), 1);
    given_scenario(&s)
        .when(
            C::Approve {
                request_id: rid(9),
                comment: None,
            },
            &ctx(&abe(), 20),
        )
        .then_refused(|e| matches!(e, DomainError::UnknownRequest(_)));
}

#[test]
fn reject_closes_and_needs_a_comment() {
    let s = Scenario::requested();
    let state = given_scenario(&s)
        .when(
            C::Reject {
                request_id: rid(1),
                comment: "not yet".into(),
            },
            &ctx(&ann(), 20),
        )
        .then_types(&["AdvanceRejected"])
        .iter()
        .fold(s.state.clone(), evolve);
    let r = state.rollout().unwrap();
    assert_eq!(r.requests[&rid(1)].status, RequestStatus::Rejected);
    assert!(r.open_request.is_none());
    given_scenario(&s)
        .when(
            C::Reject {
                request_id: rid(1),
                comment: " ".into(),
            },
            &ctx(&ann(), 20),
        )
        .then_invalid("comment");
}

#[test]
fn withdraw_request() {
    let s = Scenario::requested();
    given_scenario(&s)
        .when(C::WithdrawRequest { request_id: rid(1) }, &ctx(&rita(), 20))
        .then(&[E::AdvanceRequestWithdrawn {
            request_id: rid(1),
            withdrawn_by: id("rita"),
            at: at(20),
        }]);
    given_scenario(&s)
        .when(C::WithdrawRequest { request_id: rid(1) }, &ctx(&ann(), 20))
        .then_error(Rule::Permission);
    let withdrawn = s.run(&rita(), 20, C::WithdrawRequest { request_id: rid(1) });
    given_scenario(&withdrawn)
        .when(C::WithdrawRequest { request_id: rid(1) }, &ctx(&rita(), 30))
        .then_error(Rule::R5);
}

// --- Advance -----------------------------------------------------------------------------

#[test]
fn advance_is_refused_while_paused_or_for_unknown_requests() {
    let s = Scenario::approved();
    given_scenario(&s)
        .when(
            C::Advance {
                request_id: rid(7),
                inconclusive_override: None,
            },
            &ctx(&rita(), 3600),
        )
        .then_refused(|e| matches!(e, DomainError::UnknownRequest(_)));
    let paused = s.run(
        &sam(),
        100,
        C::Pause {
            reason: reason("hold"),
        },
    );
    given_scenario(&paused)
        .when(
            C::Advance {
                request_id: rid(1),
                inconclusive_override: None,
            },
            &ctx(&rita(), 3600),
        )
        .then_error_kind(ErrorKind::Conflict);
    // the request survives the pause
    let resumed = paused.run(&sam(), 200, C::Resume);
    given_scenario(&resumed)
        .when(
            C::Advance {
                request_id: rid(1),
                inconclusive_override: None,
            },
            &ctx(&rita(), 3600),
        )
        .then_types(&["Advanced"]);
}

// --- RecordReadings ------------------------------------------------------------------------

#[test]
fn record_readings_without_breach() {
    let s = Scenario::running();
    let readings = vec![reading("error_rate", 0.001, 50, 5)];
    given_scenario(&s)
        .when(
            C::RecordReadings {
                readings: readings.clone(),
            },
            &ctx(&bot(), 5),
        )
        .then(&[E::ReadingsRecorded {
            stage: Some(StageIndex::new(0)),
            readings,
            source: rollgate_domain::guardrail::ReadingSource::Posted,
            evaluations: vec![],
            recorded_by: id("bot"),
            at: at(5),
        }]);
}

#[test]
fn record_readings_refused_for_approvers_and_in_draft() {
    let s = Scenario::running();
    given_scenario(&s)
        .when(
            C::RecordReadings {
                readings: vec![reading("error_rate", 0.001, 50, 5)],
            },
            &ctx(&ann(), 5),
        )
        .then_error(Rule::Permission);
    given_scenario(&s)
        .when(C::RecordReadings { readings: vec![] }, &ctx(&bot(), 5))
        .then_invalid("readings");
    given_scenario(&Scenario::created())
        .when(
            C::RecordReadings {
                readings: vec![reading("error_rate", 0.001, 50, 5)],
            },
            &ctx(&bot(), 5),
        )
        .then_error_kind(ErrorKind::Conflict);
}

#[test]
fn breach_on_a_pause_stage_pauses() {
    let s = Scenario::at_stage_1();
    let state = given_scenario(&s)
        .when(
            C::RecordReadings {
                readings: vec![reading("error_rate", 0.3, 20, 3700)],
            },
            &ctx(&bot(), 3700),
        )
        .then_types(&["ReadingsRecorded", "GuardrailBreached", "Paused"])
        .iter()
        .fold(s.state.clone(), evolve);
    assert_eq!(state.status(), Some(RolloutStatus::Paused));
    // too few samples: inconclusive, nothing happens
    given_scenario(&s)
        .when(
            C::RecordReadings {
                readings: vec![reading("error_rate", 0.3, 5, 3700)],
            },
            &ctx(&bot(), 3700),
        )
        .then_types(&["ReadingsRecorded"]);
}

#[test]
fn automatic_rollback_goes_to_the_last_known_good_stage() {
    let plan = test_plan_with(|v| v["stages"][1]["on_breach"] = "rollback".into());
    let s = Scenario::new()
        .run(&rita(), 0, create_cmd(plan))
        .run(
            &rita(),
            0,
            C::SignOffReadiness {
                item_key: "qa".into(),
            },
        )
        .run(
            &sam(),
            0,
            C::SignOffReadiness {
                item_key: "runbook".into(),
            },
        )
        .run(&rita(), 0, C::Start)
        .run(&rita(), 10, C::RequestAdvance { request_id: rid(1) })
        .approve(&ann(), 1, 20)
        .approve(&abe(), 1, 20)
        .approve(&sam(), 1, 20)
        .readings(vec![reading("error_rate", 0.001, 500, 30)], 30)
        .run(
            &rita(),
            3600,
            C::Advance {
                request_id: rid(1),
                inconclusive_override: None,
            },
        );
    let events = given_scenario(&s)
        .when(
            C::RecordReadings {
                readings: vec![reading("error_rate", 0.3, 20, 3700)],
            },
            &ctx(&bot(), 3700),
        )
        .then_types(&["ReadingsRecorded", "GuardrailBreached", "RolledBack"]);
    let E::RolledBack {
        from_stage,
        to_stage,
        automatic,
        ..
    } = &events[2]
    else {
        panic!("{events:?}")
    };
    assert_eq!(*from_stage, Some(StageIndex::new(1)));
    assert_eq!(*to_stage, Some(StageIndex::new(0)));
    assert!(*automatic);
    let state = events.iter().fold(s.state.clone(), evolve);
    let r = state.rollout().unwrap();
    assert_eq!(r.position, Some(StageIndex::new(0)));
    assert_eq!(r.status, RolloutStatus::RolledBack);
}

// --- Pause / Resume ---------------------------------------------------------------------------

#[test]
fn pause_and_resume() {
    let s = Scenario::running();
    let paused = s.clone().run(
        &sam(),
        5,
        C::Pause {
            reason: reason("incident 42"),
        },
    );
    assert_eq!(paused.state.status(), Some(RolloutStatus::Paused));
    given_scenario(&paused)
        .when(C::Resume, &ctx(&rita(), 6))
        .then(&[E::Resumed {
            stage: Some(StageIndex::new(0)),
            resumed_by: id("rita"),
            policy_version: 0,
            at: at(6),
        }]);
    // refused: pausing twice, resuming a running rollout, no reason, wrong role
    given_scenario(&paused)
        .when(
            C::Pause {
                reason: reason("again"),
            },
            &ctx(&sam(), 7),
        )
        .then_error_kind(ErrorKind::Conflict);
    given_scenario(&s)
        .when(C::Resume, &ctx(&sam(), 7))
        .then_error_kind(ErrorKind::Conflict);
    given_scenario(&s)
        .when(C::Pause { reason: reason("") }, &ctx(&sam(), 7))
        .then_invalid("reason");
    given_scenario(&s)
        .when(
            C::Pause {
                reason: reason("x"),
            },
            &ctx(&ann(), 7),
        )
        .then_error(Rule::Permission);
}

// --- Rollback -------------------------------------------------------------------------------------

#[test]
fn rollback_then_resume_runs_at_the_target() {
    let s = Scenario::at_stage_1().run(
        &sam(),
        4000,
        C::Rollback {
            to_stage: Some(StageIndex::new(0)),
            reason: reason("latency"),
        },
    );
    let r = s.state.rollout().unwrap();
    assert_eq!(r.status, RolloutStatus::RolledBack);
    assert_eq!(r.position, Some(StageIndex::new(0)));
    let resumed = s.run(&sam(), 4100, C::Resume);
    assert_eq!(resumed.state.status(), Some(RolloutStatus::Running));
    // the next request asks for stage 1 again
    given_scenario(&resumed)
        .when(
            C::RequestAdvance { request_id: rid(5) },
            &ctx(&rita(), 4200),
        )
        .then_types(&["AdvanceRequested"]);
}

#[test]
fn rollback_to_zero_then_the_next_request_asks_for_stage_zero() {
    let s = Scenario::running()
        .run(
            &sam(),
            5,
            C::Rollback {
                to_stage: None,
                reason: reason("bad"),
            },
        )
        .run(&rita(), 6, C::Resume);
    let events = given_scenario(&s)
        .when(C::RequestAdvance { request_id: rid(3) }, &ctx(&rita(), 7))
        .events();
    assert!(matches!(
        events[0],
        E::AdvanceRequested {
            from_stage: None,
            ..
        }
    ));
    let E::AdvanceRequested { to_stage, .. } = &events[0] else {
        panic!()
    };
    assert_eq!(*to_stage, StageIndex::new(0));
}

#[test]
fn rollback_closes_the_open_request_and_refuses_bad_targets() {
    let s = Scenario::requested();
    let rolled = s.clone().run(
        &rita(),
        20,
        C::Rollback {
            to_stage: None,
            reason: reason("x"),
        },
    );
    let r = rolled.state.rollout().unwrap();
    assert_eq!(r.requests[&rid(1)].status, RequestStatus::Superseded);
    given_scenario(&s)
        .when(
            C::Rollback {
                to_stage: Some(StageIndex::new(0)),
                reason: reason("x"),
            },
            &ctx(&rita(), 20),
        )
        .then_invalid("to_stage");
    // at 0 % there is nothing to roll back
    given_scenario(&rolled)
        .when(
            C::Rollback {
                to_stage: None,
                reason: reason("x"),
            },
            &ctx(&rita(), 30),
        )
        .then_error_kind(ErrorKind::Conflict);
}

// --- Complete / Abort --------------------------------------------------------------------------------

fn at_last_stage() -> Scenario {
    Scenario::at_stage_1()
        .run(&rita(), 3700, C::RequestAdvance { request_id: rid(2) })
        .approve(&ann(), 2, 3700)
        .approve(&gus(), 2, 3700)
        .run(
            &rita(),
            7200,
            C::Advance {
                request_id: rid(2),
                inconclusive_override: None,
            },
        )
}

#[test]
fn complete_at_the_last_stage_is_terminal() {
    let s = at_last_stage();
    assert_eq!(s.state.rollout().unwrap().exposure().get(), 100.0);
    let state = given_scenario(&s)
        .when(C::Complete, &ctx(&rita(), 7300))
        .then(&[E::RolloutCompleted {
            stage: StageIndex::new(2),
            completed_by: id("rita"),
            policy_version: 0,
            at: at(7300),
        }]);
    assert_eq!(state.status(), Some(RolloutStatus::Completed));
    let done = s.run(&rita(), 7300, C::Complete);
    let e = given_scenario(&done)
        .when(
            C::Pause {
                reason: reason("x"),
            },
            &ctx(&sam(), 7400),
        )
        .then_error_kind(ErrorKind::Conflict);
    assert_eq!(e.to_string(), "rollout is completed: cannot pause");
}

#[test]
fn complete_refused_before_the_last_stage() {
    given_scenario(&Scenario::at_stage_1())
        .when(C::Complete, &ctx(&rita(), 4000))
        .then_error_kind(ErrorKind::Conflict);
}

#[test]
fn abort_from_any_live_state() {
    for s in [
        Scenario::created(),
        Scenario::requested(),
        Scenario::at_stage_1(),
    ] {
        let state = given_scenario(&s)
            .when(
                C::Abort {
                    reason: reason("strategy changed"),
                },
                &ctx(&rita(), 9000),
            )
            .then_types(&["RolloutAborted"])
            .iter()
            .fold(s.state.clone(), evolve);
        let r = state.rollout().unwrap();
        assert_eq!(r.status, RolloutStatus::Aborted);
        assert_eq!(r.exposure().get(), 0.0);
        assert!(r.open_request.is_none());
    }
    let aborted = Scenario::created().run(
        &rita(),
        1,
        C::Abort {
            reason: reason("x"),
        },
    );
    given_scenario(&aborted)
        .when(
            C::Abort {
                reason: reason("again"),
            },
            &ctx(&rita(), 2),
        )
        .then_error_kind(ErrorKind::Conflict);
    given_scenario(&Scenario::created())
        .when(C::Abort { reason: reason("") }, &ctx(&rita(), 2))
        .then_invalid("reason");
}

// --- Deviations ---------------------------------------------------------------------------------------

fn did(n: u128) -> DeviationId {
    DeviationId::new(Uuid::from_u128(n))
}

#[test]
fn request_deviation_records_scope_and_expiry() {
    let s = Scenario::running();
    given_scenario(&s)
        .when(
            C::RequestDeviation {
                deviation_id: did(1),
                rules: vec![Rule::R9, Rule::R4, Rule::R9],
                justification: "security fix".into(),
                expires_at: at(1000),
            },
            &ctx(&ann(), 10),
        )
        .then(&[E::DeviationRequested {
            deviation_id: did(1),
            rules: vec![Rule::R4, Rule::R9],
            justification: "security fix".into(),
            expires_at: at(1000),
            stage: Some(StageIndex::new(0)),
            requested_by: id("ann"),
            policy_version: 0,
            at: at(10),
        }]);
}

#[test]
fn request_deviation_refuses_unwaivable_rules_past_expiry_and_wrong_roles() {
    let s = Scenario::running();
    let cmd = |rules: Vec<Rule>, expires| C::RequestDeviation {
        deviation_id: did(1),
        rules,
        justification: "why".into(),
        expires_at: at(expires),
    };
    given_scenario(&s)
        .when(cmd(vec![Rule::R2], 1000), &ctx(&rita(), 10))
        .then_invalid("rules[0]");
    given_scenario(&s)
        .when(cmd(vec![Rule::R4], 10), &ctx(&rita(), 10))
        .then_invalid("expires_at");
    given_scenario(&s)
        .when(cmd(vec![], 1000), &ctx(&rita(), 10))
        .then_invalid("rules");
    given_scenario(&s)
        .when(cmd(vec![Rule::R4], 1000), &ctx(&bot(), 10))
        .then_error(Rule::Permission);
}

#[test]
fn deny_deviation() {
    let s = Scenario::running().run(
        &rita(),
        10,
        C::RequestDeviation {
            deviation_id: did(1),
            rules: vec![Rule::R4],
            justification: "why".into(),
            expires_at: at(1000),
        },
    );
    let denied = given_scenario(&s)
        .when(
            C::DenyDeviation {
                deviation_id: did(1),
                comment: "no reason to rush".into(),
            },
            &ctx(&gus(), 20),
        )
        .then_types(&["DeviationDenied"])
        .iter()
        .fold(s.state.clone(), evolve);
    assert_eq!(
        denied.rollout().unwrap().deviations[&did(1)].status,
        rollgate_domain::rollout::DeviationStatus::Denied
    );
    given_scenario(&s)
        .when(
            C::DenyDeviation {
                deviation_id: did(1),
                comment: "no".into(),
            },
            &ctx(&sam(), 20),
        )
        .then_error(Rule::R8);
    given_scenario(&s)
        .when(
            C::DenyDeviation {
                deviation_id: did(2),
                comment: "no".into(),
            },
            &ctx(&gus(), 20),
        )
        .then_refused(|e| matches!(e, DomainError::UnknownDeviation(_)));
    // a denied deviation cannot be granted later
    let later = s.run(
        &gus(),
        20,
        C::DenyDeviation {
            deviation_id: did(1),
            comment: "no".into(),
        },
    );
    given_scenario(&later)
        .when(
            C::GrantDeviation {
                deviation_id: did(1),
                comment: String::new(),
            },
            &ctx(&gwen(), 30),
        )
        .then_error(Rule::R8);
}

#[test]
fn policy_decides_who_grants() {
    let mut policy = policy();
    policy.deviation_granter_roles = [Role::Sre].into();
    let s = Scenario::running().run(
        &rita(),
        10,
        C::RequestDeviation {
            deviation_id: did(1),
            rules: vec![Rule::R4],
            justification: "why".into(),
            expires_at: at(1000),
        },
    );
    given_scenario(&s)
        .when(
            C::GrantDeviation {
                deviation_id: did(1),
                comment: String::new(),
            },
            &ctx_with(&sam(), 20, policy.clone()),
        )
        .then_types(&["DeviationGranted"]);
    given_scenario(&s)
        .when(
            C::GrantDeviation {
                deviation_id: did(1),
                comment: String::new(),
            },
            &ctx_with(&gus(), 20, policy),
        )
        .then_error(Rule::R8);
}

// --- Decisions, notes, annotations ----------------------------------------------------------------------

#[test]
fn record_decision() {
    let s = Scenario::running();
    let cmd = C::RecordDecision {
        decision_id: DecisionId::new(Uuid::from_u128(1)),
        title: "Skip the beta survey".into(),
        rationale: "low response rate".into(),
        alternatives: vec!["extend beta by a week".into()],
        outcome: "proceed without survey".into(),
    };
    given_scenario(&s)
        .when(cmd.clone(), &ctx(&ann(), 10))
        .then(&[E::DecisionRecorded {
            decision_id: DecisionId::new(Uuid::from_u128(1)),
            title: "Skip the beta survey".into(),
            rationale: "low response rate".into(),
            alternatives: vec!["extend beta by a week".into()],
            outcome: "proceed without survey".into(),
            stage: Some(StageIndex::new(0)),
            decided_by: id("ann"),
            policy_version: 0,
            at: at(10),
        }]);
    given_scenario(&s)
        .when(cmd.clone(), &ctx(&bot(), 10))
        .then_error(Rule::Permission);
    let again = s.run(&ann(), 10, cmd.clone());
    given_scenario(&again)
        .when(cmd, &ctx(&ann(), 11))
        .then_error_kind(ErrorKind::Conflict);
    given_scenario(&Scenario::running())
        .when(
            C::RecordDecision {
                decision_id: DecisionId::new(Uuid::from_u128(2)),
                title: String::new(),
                rationale: String::new(),
                alternatives: vec![],
                outcome: "x".into(),
            },
            &ctx(&ann(), 10),
        )
        .then_invalid("rationale");
}

#[test]
fn add_note() {
    let s = Scenario::running();
    given_scenario(&s)
        .when(
            C::AddNote {
                audience: NoteAudience::External,
                text: "rolling out to beta".into(),
            },
            &ctx(&rita(), 10),
        )
        .then(&[E::NoteAdded {
            audience: NoteAudience::External,
            text: "rolling out to beta".into(),
            stage: Some(StageIndex::new(0)),
            author: id("rita"),
            at: at(10),
        }]);
    given_scenario(&s)
        .when(
            C::AddNote {
                audience: NoteAudience::Internal,
                text: "x".into(),
            },
            &ctx(&sam(), 10),
        )
        .then_error(Rule::Permission);
}

#[test]
fn annotate_even_after_completion() {
    let done = at_last_stage().run(&rita(), 7300, C::Complete);
    let cmd = C::Annotate {
        annotation_id: AnnotationId::new(Uuid::from_u128(1)),
        about: Some("T+01:00".into()),
        text: "latency spike was the CDN".into(),
    };
    given_scenario(&done)
        .when(cmd.clone(), &ctx(&sam(), 9000))
        .then_types(&["Annotated"]);
    given_scenario(&done)
        .when(cmd, &ctx(&bot(), 9000))
        .then_error(Rule::Permission);
}

#[test]
fn state_folds_from_scratch_equal_incremental() {
    let s = at_last_stage();
    assert_eq!(RolloutState::from_events(&s.events), s.state);
}
