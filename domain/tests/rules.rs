//! Governance rules R1–R11: for each, an allowed case and a refused case that
//! names the rule. Time moves only through the context's clock.

mod common;

use std::collections::BTreeSet;

use common::*;
use rollgate_domain::context::FreezeWindow;
use rollgate_domain::rollout::{
    CountedApproval, RolloutCommand as C, RolloutEvent as E, RolloutStatus,
};
use rollgate_domain::{DeviationId, ErrorKind, FreezeId, Role, Rule, StageIndex, TeamScope};
use uuid::Uuid;

const DAY: i64 = 86_400;

fn advance(request: u128) -> C {
    C::Advance {
        request_id: rid(request),
        inconclusive_override: None,
    }
}

fn approve(request: u128) -> C {
    C::Approve {
        request_id: rid(request),
        comment: Some("looks good".into()),
    }
}

fn did(n: u128) -> DeviationId {
    DeviationId::new(Uuid::from_u128(0xd0 + n))
}

fn request_deviation(n: u128, rules: &[Rule], expires_secs: i64) -> C {
    C::RequestDeviation {
        deviation_id: did(n),
        rules: rules.to_vec(),
        justification: "hotfix must ship before the sale".into(),
        expires_at: at(expires_secs),
    }
}

fn grant(n: u128) -> C {
    C::GrantDeviation {
        deviation_id: did(n),
        comment: "ok, once".into(),
    }
}

// --- R1 quorum -------------------------------------------------------------

#[test]
fn r1_holder_of_a_named_role_may_approve() {
    let s = Scenario::requested();
    let events = given_scenario(&s)
        .when(approve(1), &ctx(&ann(), 20))
        .events();
    assert_eq!(
        events,
        vec![E::AdvanceApproved {
            request_id: rid(1),
            approver: id("ann"),
            roles: BTreeSet::from([Role::Approver]),
            comment: Some("looks good".into()),
            plan_revision: 1,
            expires_at: at(20 + 7 * DAY),
            policy_version: 0,
            at: at(20),
        }]
    );
}

#[test]
fn r1_refuses_an_approver_without_a_named_role() {
    let s = Scenario::requested();
    let e = given_scenario(&s)
        .when(approve(1), &ctx(&gus(), 20))
        .then_error(Rule::R1);
    assert_eq!(e.kind(), ErrorKind::Forbidden);
    // rejecting needs a named role too
    given_scenario(&s)
        .when(
            C::Reject {
                request_id: rid(1),
                comment: "no".into(),
            },
            &ctx(&gus(), 20),
        )
        .then_error(Rule::R1);
}

#[test]
fn r1_all_quorum_rules_must_be_met() {
    // two approvers but no SRE
    let s = Scenario::requested()
        .approve(&ann(), 1, 20)
        .approve(&abe(), 1, 20)
        .readings(vec![reading("error_rate", 0.001, 500, 30)], 30);
    let e = given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_error(Rule::R4);
    assert!(e.to_string().contains("1 more of sre"), "{e}");
}

#[test]
fn r1_one_person_counts_toward_one_rule_only() {
    let max = actor("max", &[Role::Approver, Role::Sre]);
    let s = Scenario::requested()
        .approve(&max, 1, 20)
        .approve(&ann(), 1, 20)
        .readings(vec![reading("error_rate", 0.001, 500, 30)], 30);
    // max cannot fill both the approver and the sre rule
    given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_error(Rule::R4);
}

#[test]
fn r1_assignment_maximises_satisfaction_not_first_fit() {
    // max (approver+sre) approves first: first-fit would count max as an
    // approver and leave the sre rule empty; matching puts max on the sre rule.
    let max = actor("max", &[Role::Approver, Role::Sre]);
    let s = Scenario::requested()
        .approve(&max, 1, 20)
        .approve(&ann(), 1, 21)
        .approve(&abe(), 1, 22)
        .readings(vec![reading("error_rate", 0.001, 500, 30)], 30);
    let events = given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .events();
    let E::Advanced {
        counted_approvals, ..
    } = &events[0]
    else {
        panic!("{events:?}")
    };
    let mut counted = counted_approvals.clone();
    counted.sort_by(|a, b| a.approver.cmp(&b.approver));
    assert_eq!(
        counted,
        vec![
            CountedApproval {
                approver: id("abe"),
                rule: 0
            },
            CountedApproval {
                approver: id("ann"),
                rule: 0
            },
            CountedApproval {
                approver: id("max"),
                rule: 1
            },
        ]
    );
}

// --- R2 self-approval --------------------------------------------------------

#[test]
fn r2_requester_cannot_approve_own_request() {
    let rm_approver = actor("rita", &[Role::ReleaseManager, Role::Approver]);
    let s = Scenario::running().run(&rm_approver, 10, C::RequestAdvance { request_id: rid(1) });
    let e = given_scenario(&s)
        .when(approve(1), &ctx(&rm_approver, 20))
        .then_error(Rule::R2);
    assert_eq!(
        e.to_string(),
        "R2 self-approval: rita requested this advance and cannot approve it"
    );
    assert_eq!(e.kind(), ErrorKind::Forbidden);
}

#[test]
fn r2_someone_else_may_approve() {
    let s = Scenario::requested();
    given_scenario(&s)
        .when(approve(1), &ctx(&abe(), 20))
        .then_types(&["AdvanceApproved"]);
}

// --- R3 distinct approvers ---------------------------------------------------

#[test]
fn r3_second_approval_by_the_same_person_is_refused() {
    let s = Scenario::requested().approve(&ann(), 1, 20);
    let e = given_scenario(&s)
        .when(approve(1), &ctx(&ann(), 30))
        .then_error(Rule::R3);
    assert_eq!(e.kind(), ErrorKind::Conflict);
}

#[test]
fn r3_distinct_people_each_count() {
    let s = Scenario::requested().approve(&ann(), 1, 20);
    given_scenario(&s)
        .when(approve(1), &ctx(&abe(), 30))
        .then_types(&["AdvanceApproved"]);
}

// --- R4 advance preconditions -------------------------------------------------

#[test]
fn r4_advance_when_every_precondition_holds() {
    let s = Scenario::approved();
    let state = given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .events()
        .iter()
        .fold(s.state.clone(), rollgate_domain::evolve);
    let r = state.rollout().unwrap();
    assert_eq!(r.position, Some(StageIndex::new(1)));
    assert_eq!(r.exposure().get(), 10.0);
    assert_eq!(r.status, RolloutStatus::Running);
    assert!(r.open_request.is_none());
}

#[test]
fn r4_refuses_before_the_soak_time() {
    let s = Scenario::approved();
    let e = given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3599))
        .then_error(Rule::R4);
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("soak"), "{e}");
}

#[test]
fn r4_refuses_without_approvals() {
    let s = Scenario::requested().readings(vec![reading("error_rate", 0.001, 500, 30)], 30);
    let e = given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_error(Rule::R4);
    assert!(e.to_string().contains("quorum not met"), "{e}");
}

#[test]
fn r4_refuses_when_success_criteria_fail() {
    let s = Scenario::approved().readings(vec![reading("error_rate", 0.02, 500, 40)], 40);
    let e = given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_error(Rule::R4);
    assert!(e.to_string().contains("success_criteria"), "{e}");
}

#[test]
fn r4_refuses_when_a_rollback_criterion_is_breached() {
    // beta pauses on breach; resume and try to advance with the breach on record
    let s = Scenario::at_stage_1()
        .run(&rita(), 3700, C::RequestAdvance { request_id: rid(2) })
        .approve(&ann(), 2, 3700)
        .approve(&gus(), 2, 3700)
        .readings(vec![reading("error_rate", 0.09, 50, 3800)], 3800)
        .run(&sam(), 3900, C::Resume);
    let e = given_scenario(&s)
        .when(advance(2), &ctx(&rita(), 9000))
        .then_error(Rule::R4);
    assert!(e.to_string().contains("rollback_criteria"), "{e}");
}

#[test]
fn r4_inconclusive_criteria_need_a_recorded_override() {
    let s = Scenario::requested()
        .approve(&ann(), 1, 20)
        .approve(&abe(), 1, 20)
        .approve(&sam(), 1, 20)
        .readings(vec![reading("error_rate", 0.001, 20, 30)], 30); // < 100 samples
    let e = given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_error(Rule::R4);
    assert!(e.to_string().contains("inconclusive"), "{e}");
    let events = given_scenario(&s)
        .when(
            C::Advance {
                request_id: rid(1),
                inconclusive_override: Some("traffic too low on a holiday; error rate flat".into()),
            },
            &ctx(&rita(), 3600),
        )
        .events();
    let E::Advanced {
        inconclusive_override,
        evaluations,
        ..
    } = &events[0]
    else {
        panic!()
    };
    assert_eq!(
        inconclusive_override.as_deref(),
        Some("traffic too low on a holiday; error rate flat")
    );
    assert_eq!(evaluations.len(), 1);
}

#[test]
fn r4_deviation_waives_exactly_the_r4_preconditions() {
    // no approvals and no soak, but a granted R4 deviation at stage 0
    let s = Scenario::requested()
        .readings(vec![reading("error_rate", 0.001, 500, 30)], 30)
        .run(&rita(), 40, request_deviation(1, &[Rule::R4], DAY))
        .run(&gus(), 50, grant(1));
    let events = given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 60))
        .events();
    let E::Advanced {
        deviations_used,
        waived,
        ..
    } = &events[0]
    else {
        panic!()
    };
    assert_eq!(deviations_used, &vec![did(1)]);
    assert!(waived.iter().all(|w| w.rule == Rule::R4));
    assert_eq!(waived.len(), 2, "{waived:?}"); // approvals + soak
}

#[test]
fn r4_deviation_for_another_rule_does_not_waive_r4() {
    let s = Scenario::requested()
        .readings(vec![reading("error_rate", 0.001, 500, 30)], 30)
        .run(&rita(), 40, request_deviation(1, &[Rule::R9], DAY))
        .run(&gus(), 50, grant(1));
    given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 60))
        .then_error(Rule::R4);
}

// --- R5 rejection closes the request ----------------------------------------

#[test]
fn r5_rejection_closes_the_request() {
    let s = Scenario::requested().run(
        &ann(),
        20,
        C::Reject {
            request_id: rid(1),
            comment: "error budget spent".into(),
        },
    );
    given_scenario(&s)
        .when(approve(1), &ctx(&abe(), 30))
        .then_error(Rule::R5);
    given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_error(Rule::R5);
}

#[test]
fn r5_a_new_request_starts_a_new_round() {
    let s = Scenario::requested()
        .approve(&abe(), 1, 15)
        .run(
            &ann(),
            20,
            C::Reject {
                request_id: rid(1),
                comment: "error budget spent".into(),
            },
        )
        .run(&rita(), 30, C::RequestAdvance { request_id: rid(2) });
    // abe's approval of the rejected request does not carry over
    let r = s.state.rollout().unwrap();
    assert!(r.requests[&rid(2)].approvals.is_empty());
    given_scenario(&s)
        .when(approve(2), &ctx(&abe(), 40))
        .then_types(&["AdvanceApproved"]);
}

// --- R6 approval validity ------------------------------------------------------

#[test]
fn r6_revision_invalidates_earlier_approvals() {
    let s = Scenario::approved().run(&rita(), 100, C::RevisePlan { plan: test_plan() });
    let e = given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_error(Rule::R6);
    assert!(e.to_string().contains("earlier plan revision"), "{e}");
}

#[test]
fn r6_approvals_given_again_under_the_new_revision_count() {
    let s = Scenario::approved()
        .run(&rita(), 100, C::RevisePlan { plan: test_plan() })
        .approve(&ann(), 1, 200)
        .approve(&abe(), 1, 200)
        .approve(&sam(), 1, 200);
    let events = given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .events();
    assert!(matches!(
        events[0],
        E::Advanced {
            plan_revision: 2,
            ..
        }
    ));
}

#[test]
fn r6_approvals_expire_after_the_policy_window() {
    let mut policy = policy();
    policy.approval_validity_seconds = 3600;
    let s = Scenario::requested()
        .with_policy(policy.clone())
        .approve(&ann(), 1, 20)
        .approve(&abe(), 1, 20)
        .approve(&sam(), 1, 20)
        .readings(vec![reading("error_rate", 0.001, 500, 30)], 30);
    // valid until 20 + 3600
    given_scenario(&s)
        .when(advance(1), &ctx_with(&rita(), 3619, policy.clone()))
        .then_types(&["Advanced"]);
    given_scenario(&s)
        .when(advance(1), &ctx_with(&rita(), 3620, policy))
        .then_error(Rule::R6);
}

// --- R7 rollback ---------------------------------------------------------------

#[test]
fn r7_sre_rolls_back_without_approval() {
    let s = Scenario::at_stage_1();
    let state = given_scenario(&s)
        .when(
            C::Rollback {
                to_stage: None,
                reason: "checkout errors".into(),
            },
            &ctx(&sam(), 4000),
        )
        .then(&[E::RolledBack {
            from_stage: Some(StageIndex::new(1)),
            to_stage: None,
            reason: "checkout errors".into(),
            automatic: false,
            rolled_back_by: id("sam"),
            plan_revision: 1,
            policy_version: 0,
            at: at(4000),
        }]);
    let r = state.rollout().unwrap();
    assert_eq!(r.status, RolloutStatus::RolledBack);
    assert_eq!(r.exposure().get(), 0.0);
}

#[test]
fn r7_rollback_requires_a_reason() {
    let s = Scenario::at_stage_1();
    let e = given_scenario(&s)
        .when(
            C::Rollback {
                to_stage: Some(StageIndex::new(0)),
                reason: "  ".into(),
            },
            &ctx(&rita(), 4000),
        )
        .then_error(Rule::R7);
    assert_eq!(e.kind(), ErrorKind::Validation);
}

#[test]
fn r7_only_release_managers_and_sres_roll_back_by_hand() {
    let s = Scenario::at_stage_1();
    let e = given_scenario(&s)
        .when(
            C::Rollback {
                to_stage: None,
                reason: "I don't like it".into(),
            },
            &ctx(&ann(), 4000),
        )
        .then_error(Rule::R7);
    assert_eq!(e.kind(), ErrorKind::Forbidden);
}

#[test]
fn r7_automation_rolls_back_on_breach() {
    let s = Scenario::running();
    let events = given_scenario(&s)
        .when(
            C::RecordReadings {
                readings: vec![reading("error_rate", 0.2, 50, 100)],
            },
            &ctx(&bot(), 100),
        )
        .then_types(&["ReadingsRecorded", "GuardrailBreached", "RolledBack"]);
    assert!(matches!(
        &events[2],
        E::RolledBack {
            automatic: true,
            to_stage: None,
            from_stage: Some(_),
            ..
        }
    ));
    let E::GuardrailBreached {
        criterion, reading, ..
    } = &events[1]
    else {
        panic!()
    };
    assert_eq!(criterion.threshold.get(), 0.05);
    assert_eq!(reading.value, 0.2);
}

// --- R8 deviations ---------------------------------------------------------------

#[test]
fn r8_anyone_acting_on_the_rollout_may_request_and_an_admin_grants() {
    let s = Scenario::requested().run(&sam(), 20, request_deviation(1, &[Rule::R4], DAY));
    let events = given_scenario(&s).when(grant(1), &ctx(&gus(), 30)).events();
    assert_eq!(
        events,
        vec![E::DeviationGranted {
            deviation_id: did(1),
            comment: "ok, once".into(),
            granted_by: id("gus"),
            policy_version: 0,
            at: at(30),
        }]
    );
}

#[test]
fn r8_only_a_granter_role_may_grant() {
    let s = Scenario::requested().run(&sam(), 20, request_deviation(1, &[Rule::R4], DAY));
    let e = given_scenario(&s)
        .when(grant(1), &ctx(&rita(), 30))
        .then_error(Rule::R8);
    assert_eq!(e.kind(), ErrorKind::Forbidden);
}

#[test]
fn r8_the_requester_cannot_grant() {
    let both = actor("hal", &[Role::Sre, Role::GovernanceAdmin]);
    let s = Scenario::requested().run(&both, 20, request_deviation(1, &[Rule::R4], DAY));
    let e = given_scenario(&s)
        .when(grant(1), &ctx(&both, 30))
        .then_error(Rule::R8);
    assert_eq!(e.kind(), ErrorKind::Forbidden);
}

#[test]
fn r8_a_deviation_is_single_use() {
    let s = Scenario::requested()
        .readings(vec![reading("error_rate", 0.001, 500, 30)], 30)
        .run(&rita(), 40, request_deviation(1, &[Rule::R4], DAY))
        .run(&gus(), 50, grant(1))
        .run(&rita(), 60, advance(1));
    let e = given_scenario(&s)
        .when(grant(1), &ctx(&gwen(), 70))
        .then_error(Rule::R8);
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("used"), "{e}");
}

#[test]
fn r8_a_deviation_is_scoped_to_its_stage() {
    // granted at stage 0 but not needed there; it does not help at stage 1
    let s = Scenario::approved()
        .run(&rita(), 40, request_deviation(1, &[Rule::R4], 30 * DAY))
        .run(&gus(), 50, grant(1))
        .run(&rita(), 3600, advance(1))
        .run(&rita(), 3700, C::RequestAdvance { request_id: rid(2) });
    let r = s.state.rollout().unwrap();
    assert_eq!(
        r.deviations[&did(1)].status,
        rollgate_domain::rollout::DeviationStatus::Granted
    );
    given_scenario(&s)
        .when(advance(2), &ctx(&rita(), 3800))
        .then_error(Rule::R4);
}

#[test]
fn r8_an_expired_deviation_cannot_be_granted_or_used() {
    let s = Scenario::requested().run(&rita(), 40, request_deviation(1, &[Rule::R4], 100));
    given_scenario(&s)
        .when(grant(1), &ctx(&gus(), 100))
        .then_error(Rule::R8);
    let granted = s.run(&gus(), 50, grant(1));
    given_scenario(&granted)
        .when(advance(1), &ctx(&rita(), 100))
        .then_error(Rule::R4);
}

// --- R9 freeze windows --------------------------------------------------------------

fn frozen(from: i64, to: i64) -> rollgate_domain::PolicySnapshot {
    let mut p = policy();
    p.version = 3;
    p.freezes.push(FreezeWindow {
        id: FreezeId::new(Uuid::from_u128(0xf1)),
        starts_at: at(from),
        ends_at: at(to),
        reason: "black friday".into(),
    });
    p
}

#[test]
fn r9_freeze_blocks_advances() {
    let s = Scenario::approved();
    let e = given_scenario(&s)
        .when(advance(1), &ctx_with(&rita(), 3600, frozen(0, 10 * DAY)))
        .then_error(Rule::R9);
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("black friday"), "{e}");
}

#[test]
fn r9_advance_allowed_once_the_freeze_ends() {
    let s = Scenario::approved();
    let events = given_scenario(&s)
        .when(advance(1), &ctx_with(&rita(), 4000, frozen(0, 4000)))
        .events();
    assert!(matches!(
        events[0],
        E::Advanced {
            policy_version: 3,
            ..
        }
    ));
}

#[test]
fn r9_freeze_never_blocks_rollback() {
    let s = Scenario::at_stage_1();
    given_scenario(&s)
        .when(
            C::Rollback {
                to_stage: Some(StageIndex::new(0)),
                reason: "errors".into(),
            },
            &ctx_with(&sam(), 4000, frozen(0, 10 * DAY)),
        )
        .then_types(&["RolledBack"]);
}

#[test]
fn r9_a_granted_r9_deviation_waives_the_freeze() {
    let s = Scenario::approved()
        .run(&rita(), 40, request_deviation(1, &[Rule::R9], DAY))
        .run(&gus(), 50, grant(1));
    let events = given_scenario(&s)
        .when(advance(1), &ctx_with(&rita(), 3600, frozen(0, 10 * DAY)))
        .events();
    let E::Advanced {
        deviations_used,
        waived,
        ..
    } = &events[0]
    else {
        panic!()
    };
    assert_eq!(deviations_used, &vec![did(1)]);
    assert_eq!(waived[0].rule, Rule::R9);
}

// --- R10 read-only roles ------------------------------------------------------------

#[test]
fn r10_auditors_and_viewers_never_write() {
    let s = Scenario::requested();
    for reader in [auditor(), viewer()] {
        for cmd in [
            approve(1),
            C::Pause { reason: "x".into() },
            C::Annotate {
                annotation_id: rollgate_domain::AnnotationId::new(Uuid::from_u128(1)),
                about: None,
                text: "x".into(),
            },
        ] {
            let e = given_scenario(&s)
                .when(cmd, &ctx(&reader, 20))
                .then_error(Rule::R10);
            assert_eq!(e.kind(), ErrorKind::Forbidden);
        }
    }
    given(&[])
        .when(create_cmd(test_plan()), &ctx(&auditor(), 0))
        .then_error(Rule::R10);
}

#[test]
fn r10_writer_roles_write() {
    let s = Scenario::requested();
    given_scenario(&s)
        .when(
            C::Pause {
                reason: "investigating".into(),
            },
            &ctx(&sam(), 20),
        )
        .then_types(&["Paused"]);
}

// --- R11 team scope --------------------------------------------------------------------

#[test]
fn r11_outside_the_actors_teams_is_not_found() {
    let s = Scenario::requested();
    let e = given_scenario(&s)
        .when(C::Pause { reason: "x".into() }, &ctx(&outsider(), 20))
        .then_error(Rule::R11);
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(
        !e.to_string().contains("web"),
        "must not leak the team: {e}"
    );
    // indistinguishable from a rollout that does not exist
    let unknown = given(&[])
        .when(C::Pause { reason: "x".into() }, &ctx(&sam(), 20))
        .then_error(Rule::R11);
    assert_eq!(unknown.to_string(), e.to_string());
    assert_eq!(unknown.kind(), e.kind());
}

#[test]
fn r11_creating_for_another_team_is_refused() {
    let e = given(&[])
        .when(create_cmd(test_plan()), &ctx(&outsider(), 0))
        .then_error(Rule::R11);
    assert!(
        matches!(e, rollgate_domain::DomainError::TeamNotAllowed { .. }),
        "{e:?}"
    );
}

#[test]
fn r11_the_star_claim_reaches_every_team() {
    let s = Scenario::requested();
    let everywhere = rollgate_domain::Actor::new(id("sue"), [Role::Sre], TeamScope::All);
    given_scenario(&s)
        .when(
            C::Pause {
                reason: "incident".into(),
            },
            &ctx(&everywhere, 20),
        )
        .then_types(&["Paused"]);
}

// --- R9 for start and resume ---------------------------------------------------------

#[test]
fn r9_freeze_blocks_start() {
    let s = Scenario::ready();
    let e = given_scenario(&s)
        .when(C::Start, &ctx_with(&rita(), 100, frozen(0, 10 * DAY)))
        .then_error(Rule::R9);
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("black friday"), "{e}");
    assert!(e.to_string().contains("cannot start"), "{e}");
}

#[test]
fn r9_start_allowed_outside_the_freeze() {
    let s = Scenario::ready();
    // before it starts and once it has ended (the end is exclusive)
    for secs in [99, 200] {
        given_scenario(&s)
            .when(C::Start, &ctx_with(&rita(), secs, frozen(100, 200)))
            .then_types(&["RolloutStarted"]);
    }
}

#[test]
fn r9_freeze_blocks_resume_after_a_pause_and_after_a_rollback() {
    let paused = Scenario::at_stage_1().run(
        &sam(),
        4000,
        C::Pause {
            reason: "investigating".into(),
        },
    );
    let rolled_back = Scenario::at_stage_1().run(
        &sam(),
        4000,
        C::Rollback {
            to_stage: Some(StageIndex::new(0)),
            reason: "errors".into(),
        },
    );
    for s in [paused, rolled_back] {
        let e = given_scenario(&s)
            .when(C::Resume, &ctx_with(&sam(), 5000, frozen(4500, 10 * DAY)))
            .then_error(Rule::R9);
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(e.to_string().contains("cannot resume"), "{e}");
        given_scenario(&s)
            .when(C::Resume, &ctx_with(&sam(), 5000, frozen(6000, 10 * DAY)))
            .then_types(&["Resumed"]);
    }
}

#[test]
fn r9_freeze_never_blocks_pause() {
    let s = Scenario::at_stage_1();
    given_scenario(&s)
        .when(
            C::Pause {
                reason: "freeze started".into(),
            },
            &ctx_with(&sam(), 4000, frozen(0, 10 * DAY)),
        )
        .then_types(&["Paused"]);
}
