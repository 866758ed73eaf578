//! The gate decision, given / when / then: every reason alone, then combined,
//! and a property test that the gate agrees with `decide` over generated
//! histories.

mod common;

use std::cell::RefCell;
use std::collections::BTreeSet;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rollgate_domain::context::FreezeWindow;
use rollgate_domain::gate::{gate, Effect, Gate, GateVerdict, Reason, ReasonDetail, Transition};
use rollgate_domain::rollout::{decide, evolve, RolloutCommand as C, RolloutStatus};
use rollgate_domain::{Actor, DeviationId, FreezeId, PolicySnapshot, Role, Rule, StageIndex};
use uuid::Uuid;

fn stage(n: u32) -> StageIndex {
    StageIndex::new(n)
}

fn adv(n: u32) -> Transition {
    Transition::Advance { to_stage: stage(n) }
}

/// When the gate is asked about `t` at `secs`.
fn when_gate(s: &Scenario, secs: i64, t: Transition) -> Gate {
    gate(s.state.rollout().expect("created"), &s.policy, at(secs), t)
}

fn codes(g: &Gate) -> Vec<&'static str> {
    g.reasons.iter().map(Reason::code).collect()
}

/// The blocking reasons' codes, in order.
fn blocking(g: &Gate) -> Vec<&'static str> {
    g.blocking().map(Reason::code).collect()
}

fn reason<'a>(g: &'a Gate, code: &str) -> &'a Reason {
    g.reasons
        .iter()
        .find(|r| r.code() == code)
        .unwrap_or_else(|| panic!("no {code} reason in {:#?}", g.reasons))
}

fn frozen_from(start: i64, end: i64) -> PolicySnapshot {
    let mut p = policy();
    p.freezes.push(FreezeWindow {
        id: FreezeId::new(Uuid::from_u128(0xf1)),
        starts_at: at(start),
        ends_at: at(end),
        reason: "Black Friday".into(),
    });
    p
}

fn did(n: u128) -> DeviationId {
    DeviationId::new(Uuid::from_u128(0xd0 + n))
}

fn deviation(s: Scenario, n: u128, rules: &[Rule], secs: i64) -> Scenario {
    s.run(
        &sam(),
        secs,
        C::RequestDeviation {
            deviation_id: did(n),
            rules: rules.to_vec(),
            justification: "hotfix before the sale".into(),
            expires_at: at(secs + 86_400),
        },
    )
    .run(
        &gus(),
        secs,
        C::GrantDeviation {
            deviation_id: did(n),
            comment: "once".into(),
        },
    )
}

fn advance_cmd(n: u128) -> C {
    C::Advance {
        request_id: rid(n),
        inconclusive_override: None,
    }
}

/// `approved()` with the soak done: every precondition of stage 1 holds at t=3600.
const SOAKED: i64 = 3600;

// --- allow -----------------------------------------------------------------------

#[test]
fn allow_when_every_precondition_holds_and_names_who_approved() {
    let s = Scenario::approved();
    let g = when_gate(&s, SOAKED, adv(1));
    assert_eq!(g.verdict, GateVerdict::Allow, "{:#?}", g.reasons);
    assert_eq!(g.result, "approved");
    assert!(blocking(&g).is_empty());
    assert_eq!(
        codes(&g),
        [
            "approvals",
            "quorum",
            "quorum",
            "soak",
            "guardrail",
            "guardrail"
        ]
    );
    let ReasonDetail::Quorum {
        approved_by,
        missing,
        required,
        ..
    } = &reason(&g, "quorum").detail
    else {
        unreachable!()
    };
    let who: Vec<_> = approved_by.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(who, ["abe", "ann"]);
    assert_eq!((*required, *missing), (2, 0));
    let ReasonDetail::Approvals {
        plan_revision,
        requested_by,
        not_counted,
        ..
    } = &reason(&g, "approvals").detail
    else {
        unreachable!()
    };
    assert_eq!(
        (*plan_revision, requested_by.as_str(), *not_counted),
        (1, "rita", 0)
    );
    // the command agrees
    assert!(s.try_run(&rita(), SOAKED, advance_cmd(1)).is_ok());
}

// --- each reason alone -------------------------------------------------------

#[test]
fn readiness_items_open_make_start_wait() {
    let s = Scenario::created().run(
        &rita(),
        0,
        C::SignOffReadiness {
            item_key: "qa".into(),
        },
    );
    let g = when_gate(&s, 0, Transition::Start);
    assert_eq!(g.verdict, GateVerdict::Wait);
    assert_eq!(blocking(&g), ["readiness_open"]);
    let ReasonDetail::ReadinessOpen { items } = &reason(&g, "readiness_open").detail else {
        unreachable!()
    };
    let items: Vec<_> = items.iter().map(|i| i.as_str()).collect();
    assert_eq!(items, ["runbook"]);
    assert!(s.try_run(&rita(), 0, C::Start).is_err());
}

#[test]
fn start_is_allowed_once_ready() {
    let s = Scenario::ready();
    let g = when_gate(&s, 0, Transition::Start);
    assert_eq!(g.verdict, GateVerdict::Allow, "{:#?}", g.reasons);
    assert!(g.reasons.is_empty());
    assert_eq!(
        Transition::next_for(s.state.rollout().unwrap()),
        Transition::Start
    );
}

#[test]
fn no_open_request_waits_with_every_quorum_rule_empty() {
    let s = Scenario::running().readings(vec![reading("error_rate", 0.001, 500, 30)], 30);
    let g = when_gate(&s, SOAKED, adv(1));
    assert_eq!(g.verdict, GateVerdict::Wait);
    assert_eq!(blocking(&g), ["no_open_request", "quorum", "quorum"]);
    assert_eq!(reason(&g, "no_open_request").rule, Some(Rule::R4));
}

#[test]
fn quorum_missing_waits_and_says_who_approved_and_how_many_more() {
    let s = Scenario::requested()
        .approve(&ann(), 1, 20)
        .readings(vec![reading("error_rate", 0.001, 500, 30)], 30);
    let g = when_gate(&s, SOAKED, adv(1));
    assert_eq!(g.verdict, GateVerdict::Wait);
    assert_eq!(blocking(&g), ["quorum", "quorum"]);
    let quorum: Vec<_> = g
        .reasons
        .iter()
        .filter_map(|r| match &r.detail {
            ReasonDetail::Quorum {
                rule_index,
                roles,
                approved_by,
                missing,
                ..
            } => Some((
                *rule_index,
                roles.clone(),
                approved_by
                    .iter()
                    .map(|a| a.id.as_str().to_owned())
                    .collect::<Vec<_>>(),
                *missing,
                r.rule,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        quorum,
        [
            (
                0,
                vec![Role::Approver],
                vec!["ann".to_owned()],
                1,
                Some(Rule::R4)
            ),
            (1, vec![Role::Sre], vec![], 1, Some(Rule::R4)),
        ]
    );
    assert!(reason(&g, "quorum").message.contains("1 more approval"));
    assert!(s.try_run(&rita(), SOAKED, advance_cmd(1)).is_err());
}

#[test]
fn soak_running_waits_with_the_seconds_remaining() {
    let s = Scenario::approved();
    let g = when_gate(&s, 1000, adv(1));
    assert_eq!(g.verdict, GateVerdict::Wait);
    assert_eq!(blocking(&g), ["soak"]);
    assert_eq!(
        reason(&g, "soak").detail,
        ReasonDetail::Soak {
            stage: stage(0),
            required_seconds: 3600,
            soaked_seconds: 1000,
            remaining_seconds: 2600,
        }
    );
    assert!(s.try_run(&rita(), 1000, advance_cmd(1)).is_err());
}

#[test]
fn failing_success_criterion_waits() {
    let s = Scenario::approved().readings(vec![reading("error_rate", 0.02, 500, 40)], 40);
    let g = when_gate(&s, SOAKED, adv(1));
    assert_eq!(blocking(&g), ["guardrail"]);
    let r = reason(&g, "guardrail");
    assert_eq!(r.effect, Effect::Wait);
    assert!(
        r.message
            .contains("success criterion error_rate lte 0.01 not met"),
        "{}",
        r.message
    );
}

#[test]
fn inconclusive_success_criterion_waits_for_a_person() {
    let s = Scenario::requested()
        .approve(&ann(), 1, 20)
        .approve(&abe(), 1, 20)
        .approve(&sam(), 1, 20)
        .readings(vec![reading("error_rate", 0.001, 50, 30)], 30);
    let g = when_gate(&s, SOAKED, adv(1));
    assert_eq!(g.verdict, GateVerdict::Wait);
    assert_eq!(blocking(&g), ["guardrail"]);
    assert!(reason(&g, "guardrail").message.contains("inconclusive"));
    // decide agrees: without an override it refuses, with one it accepts
    assert!(s.try_run(&rita(), SOAKED, advance_cmd(1)).is_err());
    assert!(s
        .try_run(
            &rita(),
            SOAKED,
            C::Advance {
                request_id: rid(1),
                inconclusive_override: Some("sampled by hand".into())
            }
        )
        .is_ok());
}

/// Stage 1 (beta) pauses on a breach; resumed with the breach on record.
fn breached_at_stage_1() -> Scenario {
    Scenario::at_stage_1()
        .run(&rita(), 3700, C::RequestAdvance { request_id: rid(2) })
        .approve(&ann(), 2, 3700)
        .approve(&gus(), 2, 3700)
        .readings(vec![reading("error_rate", 0.09, 50, 3800)], 3800)
        .run(&sam(), 3900, C::Resume)
}

#[test]
fn breached_rollback_criterion_waits() {
    let s = breached_at_stage_1();
    let g = when_gate(&s, 9000, adv(2));
    assert_eq!(g.verdict, GateVerdict::Wait);
    assert_eq!(blocking(&g), ["guardrail"]);
    let r = reason(&g, "guardrail");
    assert!(
        r.message
            .contains("rollback criterion error_rate gt 0.05 breached"),
        "{}",
        r.message
    );
    let ReasonDetail::Guardrail { value, samples, .. } = &r.detail else {
        unreachable!()
    };
    assert_eq!((*value, *samples), (Some(0.09), 50));
    assert!(s.try_run(&rita(), 9000, advance_cmd(2)).is_err());
}

#[test]
fn freeze_in_force_makes_an_advance_wait() {
    let s = Scenario::approved().with_policy(frozen_from(3000, 5000));
    let g = when_gate(&s, SOAKED, adv(1));
    assert_eq!(g.verdict, GateVerdict::Wait);
    assert_eq!(blocking(&g), ["freeze"]);
    let r = reason(&g, "freeze");
    assert_eq!(r.rule, Some(Rule::R9));
    assert!(r.message.contains("Black Friday"));
    assert!(s.try_run(&rita(), SOAKED, advance_cmd(1)).is_err());
    // after the window the same state is allowed
    assert_eq!(when_gate(&s, 5000, adv(1)).verdict, GateVerdict::Allow);
}

#[test]
fn freeze_blocks_start_and_resume_but_never_pause_or_rollback() {
    let ready = Scenario::ready().with_policy(frozen_from(0, 5000));
    assert_eq!(
        blocking(&when_gate(&ready, 10, Transition::Start)),
        ["freeze"]
    );

    let running = Scenario::running().with_policy(frozen_from(0, 5000));
    assert_eq!(
        when_gate(&running, 10, Transition::Pause).verdict,
        GateVerdict::Allow
    );

    let at_1 = Scenario::at_stage_1().with_policy(frozen_from(0, 9000));
    assert_eq!(
        when_gate(&at_1, 4000, Transition::Rollback).verdict,
        GateVerdict::Allow
    );
    let paused = at_1.run(
        &sam(),
        4000,
        C::Pause {
            reason: "look".into(),
        },
    );
    assert_eq!(
        blocking(&when_gate(&paused, 4100, Transition::Resume)),
        ["freeze"]
    );
    assert_eq!(
        when_gate(&paused, 9000, Transition::Resume).verdict,
        GateVerdict::Allow
    );
}

#[test]
fn stale_approvals_after_a_plan_revision_are_not_counted() {
    let s = Scenario::approved().run(&rita(), 100, C::RevisePlan { plan: test_plan() });
    let g = when_gate(&s, SOAKED, adv(1));
    assert_eq!(g.verdict, GateVerdict::Wait);
    assert_eq!(blocking(&g), ["quorum", "quorum"]);
    assert_eq!(reason(&g, "quorum").rule, Some(Rule::R6));
    assert_eq!(
        reason(&g, "approvals").detail,
        ReasonDetail::Approvals {
            request_id: rid(1),
            requested_by: id("rita"),
            plan_revision: 2,
            not_counted: 3,
        }
    );
    assert!(s.try_run(&rita(), SOAKED, advance_cmd(1)).is_err());
}

#[test]
fn expired_approvals_are_not_counted() {
    let mut p = policy();
    p.approval_validity_seconds = 600;
    let s = Scenario::new()
        .with_policy(p)
        .run(&rita(), 0, create_cmd(test_plan()))
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
        .readings(vec![reading("error_rate", 0.001, 500, 30)], 30);
    let g = when_gate(&s, SOAKED, adv(1));
    assert_eq!(blocking(&g), ["quorum", "quorum"]);
    assert_eq!(reason(&g, "quorum").rule, Some(Rule::R6));
    assert!(s.try_run(&rita(), SOAKED, advance_cmd(1)).is_err());
}

#[test]
fn a_granted_deviation_waives_exactly_its_rule() {
    let s = deviation(Scenario::approved(), 1, &[Rule::R4], 40);
    let g = when_gate(&s, 1000, adv(1));
    assert_eq!(g.verdict, GateVerdict::Allow, "{:#?}", g.reasons);
    let soak = reason(&g, "soak");
    assert_eq!(soak.effect, Effect::Waived);
    assert!(soak.message.contains("waived"));
    assert!(s.try_run(&rita(), 1000, advance_cmd(1)).is_ok());

    // an R9 deviation does not waive the soak
    let s = deviation(Scenario::approved(), 2, &[Rule::R9], 40);
    assert_eq!(blocking(&when_gate(&s, 1000, adv(1))), ["soak"]);
}

#[test]
fn paused_waits_and_resume_is_allowed() {
    let s = Scenario::approved().run(
        &sam(),
        100,
        C::Pause {
            reason: "look".into(),
        },
    );
    let g = when_gate(&s, SOAKED, adv(1));
    assert_eq!(g.verdict, GateVerdict::Wait);
    assert_eq!(blocking(&g), ["paused"]);
    assert_eq!(
        Transition::next_for(s.state.rollout().unwrap()),
        Transition::Resume
    );
    assert_eq!(
        when_gate(&s, SOAKED, Transition::Resume).verdict,
        GateVerdict::Allow
    );
    assert_eq!(
        blocking(&when_gate(&s, SOAKED, Transition::Pause)),
        ["paused"]
    );
}

#[test]
fn rolled_back_denies_advances() {
    let s = Scenario::at_stage_1().run(
        &sam(),
        4000,
        C::Rollback {
            to_stage: None,
            reason: "errors".into(),
        },
    );
    let g = when_gate(&s, 9000, adv(1));
    assert_eq!(g.verdict, GateVerdict::Deny);
    assert_eq!(g.result, "rejected");
    assert_eq!(
        reason(&g, "rolled_back").detail,
        ReasonDetail::RolledBack { to_stage: None }
    );
    assert_eq!(
        blocking(&when_gate(&s, 9000, Transition::Rollback)),
        ["nothing_to_roll_back"]
    );
    assert_eq!(
        when_gate(&s, 9000, Transition::Resume).verdict,
        GateVerdict::Allow
    );
}

#[test]
fn automatic_rollback_on_a_breach_denies() {
    let s = Scenario::approved().readings(vec![reading("error_rate", 0.2, 100, 50)], 50);
    assert_eq!(s.state.status(), Some(RolloutStatus::RolledBack));
    let g = when_gate(&s, SOAKED, adv(1));
    assert_eq!(g.verdict, GateVerdict::Deny);
    assert_eq!(blocking(&g), ["rolled_back"]);
}

#[test]
fn aborted_denies_everything() {
    let s = Scenario::approved().run(
        &rita(),
        100,
        C::Abort {
            reason: "dropped".into(),
        },
    );
    for t in [
        Transition::Start,
        adv(1),
        Transition::Resume,
        Transition::Complete,
        Transition::Pause,
        Transition::Rollback,
    ] {
        let g = when_gate(&s, SOAKED, t);
        assert_eq!(g.verdict, GateVerdict::Deny, "{t}");
        assert!(
            g.has("aborted") || g.has("wrong_state"),
            "{t}: {:?}",
            codes(&g)
        );
    }
}

fn completed() -> Scenario {
    Scenario::at_stage_1()
        .run(&rita(), 3700, C::RequestAdvance { request_id: rid(2) })
        .approve(&ann(), 2, 3700)
        .approve(&gus(), 2, 3700)
        .run(&rita(), 7200, advance_cmd(2))
}

#[test]
fn completion_at_the_last_stage_then_completed_denies() {
    let s = completed();
    assert_eq!(
        Transition::next_for(s.state.rollout().unwrap()),
        Transition::Complete
    );
    assert_eq!(
        when_gate(&s, 7300, Transition::Complete).verdict,
        GateVerdict::Allow
    );
    let done = s.run(&rita(), 7300, C::Complete);
    let g = when_gate(&done, 7400, Transition::Complete);
    assert_eq!(g.verdict, GateVerdict::Deny);
    assert_eq!(blocking(&g), ["completed"]);
    assert_eq!(blocking(&when_gate(&done, 7400, adv(2))), ["completed"]);
}

#[test]
fn completion_before_the_last_stage_waits() {
    let g = when_gate(&Scenario::at_stage_1(), 4000, Transition::Complete);
    assert_eq!(g.verdict, GateVerdict::Wait);
    assert_eq!(
        reason(&g, "not_at_last_stage").detail,
        ReasonDetail::NotAtLastStage {
            position: Some(stage(1)),
            last: stage(2)
        }
    );
}

#[test]
fn named_stages_already_reached_later_or_unknown() {
    let s = Scenario::at_stage_1();
    let reached = when_gate(&s, 4000, adv(0));
    assert_eq!(reached.verdict, GateVerdict::Allow);
    assert_eq!(codes(&reached), ["already_reached"]);
    let early = Scenario::approved();
    let g = when_gate(&early, SOAKED, adv(2));
    assert_eq!(g.verdict, GateVerdict::Wait);
    assert_eq!(
        reason(&g, "not_next_stage").detail,
        ReasonDetail::NotNextStage {
            requested: stage(2),
            next: Some(stage(1))
        }
    );
    assert_eq!(blocking(&when_gate(&s, 4000, adv(7))), ["no_such_stage"]);
    assert_eq!(when_gate(&s, 4000, adv(7)).verdict, GateVerdict::Deny);
}

#[test]
fn not_started_waits_for_an_advance() {
    let g = when_gate(&Scenario::created(), 10, adv(0));
    assert_eq!(g.verdict, GateVerdict::Wait);
    assert_eq!(blocking(&g), ["not_started", "readiness_open"]);
}

#[test]
fn a_changed_canary_makes_an_allowed_gate_wait() {
    let g = when_gate(&Scenario::approved(), SOAKED, adv(1)).with_reason(Reason::new(
        ReasonDetail::CanaryChanged {
            approved: "85d557f47b".into(),
            current: "6c9f1e2a3b".into(),
        },
        Effect::Wait,
        None,
    ));
    assert_eq!(g.verdict, GateVerdict::Wait);
    assert_eq!(g.result, "pending");
    assert!(
        g.summary().contains("canary changed since approval"),
        "{}",
        g.summary()
    );
}

// --- combined ------------------------------------------------------------------

#[test]
fn every_blocking_reason_at_once() {
    // one approval of three, soak running, a failing success criterion, a
    // freeze in force
    let s = Scenario::requested()
        .approve(&ann(), 1, 20)
        .readings(vec![reading("error_rate", 0.03, 500, 30)], 30)
        .with_policy(frozen_from(0, 9000));
    let g = when_gate(&s, 100, adv(1));
    assert_eq!(g.verdict, GateVerdict::Wait);
    assert_eq!(
        blocking(&g),
        ["quorum", "quorum", "soak", "guardrail", "freeze"]
    );
    let summary = g.summary();
    for part in ["more approval", "soak running", "not met", "freeze"] {
        assert!(summary.contains(part), "{part} missing in {summary}");
    }
    // each waiver lifts only its own reasons
    let s = deviation(s, 1, &[Rule::R4], 40);
    let g = when_gate(&s, 100, adv(1));
    assert_eq!(blocking(&g), ["freeze"]);
    let s = deviation(s, 2, &[Rule::R9], 40);
    assert_eq!(when_gate(&s, 100, adv(1)).verdict, GateVerdict::Allow);
    assert!(s.try_run(&rita(), 100, advance_cmd(1)).is_ok());
}

#[test]
fn a_breach_and_a_pause_and_a_freeze_combined() {
    let s = breached_at_stage_1()
        .run(
            &sam(),
            4000,
            C::Pause {
                reason: "again".into(),
            },
        )
        .with_policy(frozen_from(0, 99_000));
    let g = when_gate(&s, 9000, adv(2));
    assert_eq!(blocking(&g), ["paused"]);
    let resume = when_gate(&s, 9000, Transition::Resume);
    assert_eq!(blocking(&resume), ["freeze"]);
    let resumed = s.with_policy(policy()).run(&sam(), 9000, C::Resume);
    let g = when_gate(&resumed.with_policy(frozen_from(0, 99_000)), 9100, adv(2));
    assert_eq!(blocking(&g), ["guardrail", "freeze"]);
}

#[test]
fn reasons_serialize_with_code_effect_rule_and_message() {
    let s = Scenario::requested().approve(&ann(), 1, 20);
    let g = when_gate(&s, 100, adv(1));
    let v = serde_json::to_value(&g).unwrap();
    assert_eq!(v["verdict"], "wait");
    assert_eq!(v["result"], "pending");
    assert_eq!(v["transition"]["kind"], "advance");
    assert_eq!(v["transition"]["to_stage"], 1);
    let quorum = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["code"] == "quorum")
        .unwrap();
    assert_eq!(quorum["effect"], "wait");
    assert_eq!(quorum["rule"], "R4");
    assert_eq!(quorum["approved_by"][0]["id"], "ann");
    assert!(quorum["message"].as_str().unwrap().contains("1 more"));
    let back: Gate = serde_json::from_value(v).unwrap();
    assert_eq!(back, g);
}

// --- agreement with decide ---------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    SignOff(bool),
    Start,
    Request,
    Approve(usize),
    Readings(u8),
    Advance,
    Pause,
    Resume,
    Rollback(bool),
    Complete,
    Abort,
    Revise,
    Deviation(u8),
    Wait(i64),
    /// A scripted happy path: request, every approver, good readings, the soak, advance.
    Happy,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => any::<bool>().prop_map(Op::SignOff),
        2 => Just(Op::Start),
        3 => Just(Op::Request),
        6 => (0usize..6).prop_map(Op::Approve),
        3 => (0u8..4).prop_map(Op::Readings),
        4 => Just(Op::Advance),
        1 => Just(Op::Pause),
        2 => Just(Op::Resume),
        1 => any::<bool>().prop_map(Op::Rollback),
        1 => Just(Op::Complete),
        1 => Just(Op::Revise),
        1 => (0u8..4).prop_map(Op::Deviation),
        6 => (0i64..4000).prop_map(Op::Wait),
        1 => Just(Op::Abort),
        3 => Just(Op::Happy),
    ]
}

fn approvers() -> [Actor; 6] {
    let pat = actor("pat", &[Role::Approver, Role::Sre]);
    let gail = actor("gail", &[Role::Approver, Role::GovernanceAdmin]);
    [ann(), abe(), sam(), gus(), pat, gail]
}

/// The gate's verdict for `t` must be `allow` exactly when `decide` accepts
/// the command performing `t`.
fn check_agreement(
    s: &Scenario,
    now: i64,
    seen: &RefCell<BTreeSet<(&'static str, GateVerdict)>>,
) -> Result<(), TestCaseError> {
    let r = s.state.rollout().unwrap();
    let ctx_rm = s.ctx(&rita(), now);
    let ctx_sre = s.ctx(&sam(), now);
    let accepted = |cmd: C, by: &rollgate_domain::Context| decide(&s.state, cmd, by).is_ok();
    let mut pairs: Vec<(Transition, bool)> = vec![
        (Transition::Start, accepted(C::Start, &ctx_rm)),
        (Transition::Resume, accepted(C::Resume, &ctx_sre)),
        (Transition::Complete, accepted(C::Complete, &ctx_rm)),
        (
            Transition::Pause,
            accepted(C::Pause { reason: "p".into() }, &ctx_sre),
        ),
        (
            Transition::Rollback,
            accepted(
                C::Rollback {
                    to_stage: None,
                    reason: "r".into(),
                },
                &ctx_sre,
            ),
        ),
    ];
    if let Some(next) = r.next_stage() {
        let ok = r.open_request.is_some_and(|id| {
            accepted(
                C::Advance {
                    request_id: id,
                    inconclusive_override: None,
                },
                &ctx_rm,
            )
        });
        pairs.push((Transition::Advance { to_stage: next }, ok));
    }
    for (t, ok) in pairs {
        let g = gate(r, &s.policy, at(now), t);
        seen.borrow_mut().insert((t.as_str(), g.verdict));
        if matches!(t, Transition::Advance { .. }) && blocking(&g) == ["freeze"] {
            // an advance held back by the freeze alone
            seen.borrow_mut().insert(("frozen", g.verdict));
        }
        prop_assert_eq!(
            g.verdict == GateVerdict::Allow,
            ok,
            "{} at t={} status {}: gate {:?} but decide {}; reasons {:#?}",
            t,
            now,
            r.status,
            g.verdict,
            if ok { "accepts" } else { "refuses" },
            g.reasons
        );
    }
    Ok(())
}

fn apply(s: Scenario, op: &Op, now: &mut i64, n: &mut u128) -> Scenario {
    let r = s.state.rollout().unwrap();
    let open = r.open_request;
    let (who, cmd) = match op {
        Op::SignOff(qa) => {
            if *qa {
                (
                    rita(),
                    C::SignOffReadiness {
                        item_key: "qa".into(),
                    },
                )
            } else {
                (
                    sam(),
                    C::SignOffReadiness {
                        item_key: "runbook".into(),
                    },
                )
            }
        }
        Op::Start => (rita(), C::Start),
        Op::Request => {
            *n += 1;
            (
                rita(),
                C::RequestAdvance {
                    request_id: rid(*n),
                },
            )
        }
        Op::Approve(i) => (
            approvers()[*i].clone(),
            C::Approve {
                request_id: open.unwrap_or(rid(999)),
                comment: None,
            },
        ),
        Op::Readings(kind) => {
            let (v, samples) = match kind {
                0 => (0.001, 500),
                1 => (0.02, 500),
                2 => (0.001, 5),
                _ => (0.3, 100),
            };
            (
                bot(),
                C::RecordReadings {
                    readings: vec![reading("error_rate", v, samples, *now)],
                },
            )
        }
        Op::Advance => (
            rita(),
            C::Advance {
                request_id: open.unwrap_or(rid(999)),
                inconclusive_override: None,
            },
        ),
        Op::Pause => (sam(), C::Pause { reason: "p".into() }),
        Op::Resume => (sam(), C::Resume),
        Op::Rollback(to_first) => (
            sam(),
            C::Rollback {
                to_stage: to_first.then_some(StageIndex::FIRST),
                reason: "r".into(),
            },
        ),
        Op::Complete => (rita(), C::Complete),
        Op::Abort => (rita(), C::Abort { reason: "a".into() }),
        Op::Revise => (rita(), C::RevisePlan { plan: test_plan() }),
        Op::Deviation(rules) => {
            *n += 1;
            let rules = match rules {
                0 => vec![Rule::R4],
                1 => vec![Rule::R6],
                2 => vec![Rule::R9],
                _ => vec![Rule::R4, Rule::R6, Rule::R9],
            };
            let id = DeviationId::new(Uuid::from_u128(0xd000 + *n));
            let req = C::RequestDeviation {
                deviation_id: id,
                rules,
                justification: "j".into(),
                expires_at: at(*now + 5000),
            };
            let s = return_run(s, &sam(), *now, req);
            let grant = C::GrantDeviation {
                deviation_id: id,
                comment: "ok".into(),
            };
            return return_run(s, &gus(), *now, grant);
        }
        Op::Wait(secs) => {
            *now += secs;
            return s;
        }
        Op::Happy => return s,
    };
    return_run(s, &who, *now, cmd)
}

fn fold(mut s: Scenario, events: Vec<rollgate_domain::rollout::RolloutEvent>) -> Scenario {
    for e in &events {
        s.state = evolve(s.state, e);
    }
    s.events.extend(events);
    s
}

/// Runs `cmd`, keeping the scenario unchanged on a refusal.
fn return_run(s: Scenario, who: &Actor, now: i64, cmd: C) -> Scenario {
    match decide(&s.state, cmd, &s.ctx(who, now)) {
        Ok(events) => fold(s, events),
        Err(_) => s,
    }
}

#[test]
fn the_gate_agrees_with_decide_over_generated_histories() {
    let seen = RefCell::new(BTreeSet::new());
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        ..Config::default()
    });
    // Half the histories start from a running rollout, so that freezes (which
    // also block the start) meet advances.
    let history = (
        prop::collection::vec(op(), 10..80),
        prop::option::of((1i64..8000, 600i64..30_000)),
        any::<bool>(),
    );
    runner
        .run(&history, |(ops, freeze, started)| {
            let policy = match freeze {
                Some((start, len)) => frozen_from(start, start + len),
                None => policy(),
            };
            let mut s =
                Scenario::new()
                    .with_policy(policy)
                    .run(&rita(), 0, create_cmd(test_plan()));
            if started {
                s = s
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
                    .run(&rita(), 0, C::Start);
            }
            let (mut now, mut n) = (0i64, 0u128);
            check_agreement(&s, now, &seen)?;
            let expanded = ops.iter().flat_map(|op| match op {
                Op::Happy => {
                    let mut script = vec![Op::Request];
                    script.extend((0..6).map(Op::Approve));
                    script.extend([Op::Readings(0), Op::Wait(3700), Op::Advance]);
                    script
                }
                other => vec![other.clone()],
            });
            for op in expanded {
                s = apply(s, &op, &mut now, &mut n);
                check_agreement(&s, now, &seen)?;
                // also a little later, without a new event (soak, expiry, freeze edges)
                check_agreement(&s, now + 1800, &seen)?;
            }
            Ok(())
        })
        .unwrap();
    // the histories must reach every verdict of an advance, and allowed starts,
    // resumes, completions, pauses and rollbacks
    let seen = seen.into_inner();
    for v in [GateVerdict::Allow, GateVerdict::Wait, GateVerdict::Deny] {
        assert!(seen.contains(&("advance", v)), "no {v} advance in {seen:?}");
    }
    assert!(
        seen.contains(&("frozen", GateVerdict::Wait)),
        "no advance held back by a freeze alone in {seen:?}"
    );
    for t in ["start", "resume", "complete", "pause", "rollback"] {
        assert!(
            seen.contains(&(t, GateVerdict::Allow)),
            "no allowed {t} in {seen:?}"
        );
    }
}
