//! Boundaries of the rules, each on both sides: sample minimums, soak time,
//! text limits, and which rule (R4 or R6) a shortfall of approvals is
//! attributed to.

mod common;

use common::*;
use rollgate_domain::rollout::{RolloutCommand as C, RolloutEvent as E};
use rollgate_domain::{Rule, StageIndex};

fn advance(request: u128) -> C {
    C::Advance {
        request_id: rid(request),
        inconclusive_override: None,
    }
}

// --- min_samples --------------------------------------------------------------------

#[test]
fn a_success_criterion_is_conclusive_from_exactly_min_samples() {
    // stage 0: error_rate lte 0.01 with min_samples 100
    let base = Scenario::requested()
        .approve(&ann(), 1, 20)
        .approve(&abe(), 1, 20)
        .approve(&sam(), 1, 20);
    let enough = base
        .clone()
        .readings(vec![reading("error_rate", 0.001, 100, 30)], 30);
    let events = given_scenario(&enough)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_types(&["Advanced"]);
    let E::Advanced { evaluations, .. } = &events[0] else {
        panic!()
    };
    assert_eq!(evaluations[0].samples, 100);
    let short = base.readings(vec![reading("error_rate", 0.001, 99, 30)], 30);
    let e = given_scenario(&short)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_error(Rule::R4);
    assert!(e.to_string().contains("inconclusive"), "{e}");
    assert!(e.to_string().contains("99 samples"), "{e}");
}

#[test]
fn a_rollback_criterion_breaches_from_exactly_min_samples() {
    // stage 0: error_rate gt 0.05 with min_samples 10, on_breach rollback
    let s = Scenario::running();
    given_scenario(&s)
        .when(
            C::RecordReadings {
                readings: vec![reading("error_rate", 0.3, 10, 5)],
            },
            &ctx(&bot(), 5),
        )
        .then_types(&["ReadingsRecorded", "GuardrailBreached", "RolledBack"]);
    given_scenario(&s)
        .when(
            C::RecordReadings {
                readings: vec![reading("error_rate", 0.3, 9, 5)],
            },
            &ctx(&bot(), 5),
        )
        .then_types(&["ReadingsRecorded"]);
}

#[test]
fn a_reading_at_the_threshold_neither_breaches_nor_fails() {
    // rollback: gt 0.05 (0.05 is fine); success: lte 0.01 (0.01 passes)
    let s = Scenario::running();
    given_scenario(&s)
        .when(
            C::RecordReadings {
                readings: vec![reading("error_rate", 0.05, 500, 5)],
            },
            &ctx(&bot(), 5),
        )
        .then_types(&["ReadingsRecorded"]);
    let s = Scenario::requested()
        .approve(&ann(), 1, 20)
        .approve(&abe(), 1, 20)
        .approve(&sam(), 1, 20)
        .readings(vec![reading("error_rate", 0.01, 500, 30)], 30);
    given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_types(&["Advanced"]);
}

// --- soak -----------------------------------------------------------------------------

#[test]
fn soak_is_met_at_exactly_min_soak_seconds_after_entering_the_stage() {
    let s = Scenario::approved(); // entered stage 0 at 0, soak 3600
    given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_types(&["Advanced"]);
    let e = given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3599))
        .then_error(Rule::R4);
    assert!(
        e.to_string().contains("soaked 3599s of the required 3600s"),
        "{e}"
    );
}

#[test]
fn soak_starts_over_when_a_stage_is_re_entered() {
    // at stage 1 since 3600; rolled back to stage 0 at 4000: stage 0 soaks from 4000
    let s = Scenario::at_stage_1()
        .run(
            &sam(),
            4000,
            C::Rollback {
                to_stage: Some(StageIndex::new(0)),
                reason: "errors".into(),
            },
        )
        .run(&sam(), 4100, C::Resume)
        .readings(vec![reading("error_rate", 0.001, 500, 4200)], 4200);
    let r = s.state.rollout().unwrap();
    assert_eq!(r.stage_entered_at, Some(at(4000)));
    let s = s
        .run(&rita(), 4300, C::RequestAdvance { request_id: rid(2) })
        .approve(&ann(), 2, 4400)
        .approve(&abe(), 2, 4400)
        .approve(&sam(), 2, 4400);
    let e = given_scenario(&s)
        .when(advance(2), &ctx(&rita(), 7599))
        .then_error(Rule::R4);
    assert!(e.to_string().contains("soaked 3599s"), "{e}");
    given_scenario(&s)
        .when(advance(2), &ctx(&rita(), 7600))
        .then_types(&["Advanced"]);
}

// --- R4 or R6 for a shortfall of approvals ---------------------------------------------

#[test]
fn voided_approvals_that_would_not_have_met_the_quorum_are_an_r4_shortfall() {
    // only ann approved (the quorum needs 2 approvers and 1 sre); the plan
    // revision voids her approval, but even with it the quorum was not met
    let s = Scenario::requested()
        .approve(&ann(), 1, 20)
        .readings(vec![reading("error_rate", 0.001, 500, 30)], 30)
        .run(&rita(), 100, C::RevisePlan { plan: test_plan() });
    let e = given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_error(Rule::R4);
    assert!(e.to_string().contains("quorum not met"), "{e}");
}

#[test]
fn voided_approvals_that_met_the_quorum_are_an_r6_shortfall() {
    let s = Scenario::approved().run(&rita(), 100, C::RevisePlan { plan: test_plan() });
    let e = given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_error(Rule::R6);
    assert!(
        e.to_string()
            .contains("needs 2 more of approver, 1 more of sre"),
        "{e}"
    );
}

#[test]
fn a_quorum_met_without_the_voided_approval_is_no_shortfall() {
    // ann approved twice: under revision 1 (voided) and again under revision 2,
    // with abe and sam: the quorum is met by valid approvals alone
    let s = Scenario::requested()
        .approve(&ann(), 1, 20)
        .run(&rita(), 100, C::RevisePlan { plan: test_plan() })
        .approve(&ann(), 1, 200)
        .approve(&abe(), 1, 200)
        .approve(&sam(), 1, 200)
        .readings(vec![reading("error_rate", 0.001, 500, 300)], 300);
    given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_types(&["Advanced"]);
}

// --- text limits ------------------------------------------------------------------------

#[test]
fn texts_may_be_10000_bytes_and_not_one_more() {
    let s = Scenario::running();
    let pause: fn(String) -> C = |t| C::Pause { reason: t };
    let note: fn(String) -> C = |t| C::AddNote {
        audience: rollgate_domain::NoteAudience::Internal,
        text: t,
    };
    let abort: fn(String) -> C = |t| C::Abort { reason: t };
    for (who, cmd, field) in [
        (sam(), pause, "reason"),
        (rita(), note, "text"),
        (rita(), abort, "reason"),
    ] {
        // 10,000 bytes in two-byte characters, then one byte more
        given_scenario(&s)
            .when(cmd("é".repeat(5_000)), &ctx(&who, 5))
            .events();
        given_scenario(&s)
            .when(cmd(format!("{}x", "é".repeat(5_000))), &ctx(&who, 5))
            .then_invalid(field);
    }
    // the rationale of a decision too
    let decision = |rationale: String| C::RecordDecision {
        decision_id: rollgate_domain::DecisionId::new(uuid::Uuid::from_u128(9)),
        title: "t".into(),
        rationale,
        alternatives: vec![],
        outcome: "o".into(),
    };
    given_scenario(&s)
        .when(decision("a".repeat(10_000)), &ctx(&ann(), 5))
        .events();
    given_scenario(&s)
        .when(decision("a".repeat(10_001)), &ctx(&ann(), 5))
        .then_invalid("rationale");
}

#[test]
fn a_short_quorum_names_only_the_rules_still_missing_approvals() {
    // both approvers approved; only the sre rule is short
    let s = Scenario::requested()
        .approve(&ann(), 1, 20)
        .approve(&abe(), 1, 20)
        .readings(vec![reading("error_rate", 0.001, 500, 30)], 30);
    let e = given_scenario(&s)
        .when(advance(1), &ctx(&rita(), 3600))
        .then_error(Rule::R4);
    let rollgate_domain::DomainError::AdvanceBlocked { unmet, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(unmet.len(), 1, "{unmet:?}");
    assert_eq!(unmet[0].detail, "quorum not met: needs 1 more of sre");
}
