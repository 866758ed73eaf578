//! Property tests: random command sequences by random actors over a moving
//! clock must keep the governance invariants.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use proptest::prelude::*;
use rollgate_domain::context::FreezeWindow;
use rollgate_domain::rollout::{
    decide, evolve, NoteAudience, RolloutCommand as C, RolloutEvent as E, RolloutState,
};
use rollgate_domain::{
    Actor, AnnotationId, DecisionId, DeviationId, FreezeId, PolicySnapshot, RequestId, Role, Rule,
    StageIndex, TeamScope,
};
use uuid::Uuid;

#[derive(Clone, Debug)]
enum Op {
    SignOff(u8),
    Start,
    Revise,
    Request(u8),
    Approve(u8),
    Reject(u8),
    Withdraw(u8),
    Advance(u8, bool),
    Readings(u8, u8),
    Pause,
    Resume,
    Rollback(Option<u8>, bool),
    Complete,
    Abort,
    RequestDeviation(u8, Vec<u8>, i64),
    Grant(u8),
    Deny(u8),
    Decision(u8),
    Note,
    Annotate(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        32 => (0u8..3).prop_map(Op::SignOff),
        24 => Just(Op::Start),
        2 => Just(Op::Revise),
        80 => (0u8..2).prop_map(Op::Request),
        240 => (0u8..3).prop_map(|r| Op::Approve(r / 2)),
        8 => (0u8..2).prop_map(Op::Reject),
        8 => (0u8..2).prop_map(Op::Withdraw),
        96 => ((0u8..3), any::<bool>()).prop_map(|(r, o)| Op::Advance(r / 2, o)),
        80 => ((0u8..8), (0u8..2)).prop_map(|(v, n)| Op::Readings(v.saturating_sub(5), n)),
        8 => Just(Op::Pause),
        60 => Just(Op::Resume),
        16 => (proptest::option::of(0u8..3), any::<bool>()).prop_map(|(t, r)| Op::Rollback(t, r)),
        16 => Just(Op::Complete),
        1 => Just(Op::Abort),
        32 => ((0u8..2), proptest::collection::vec(0u8..4, 0..3), -100i64..20_000)
            .prop_map(|(d, r, e)| Op::RequestDeviation(d, r, e)),
        32 => (0u8..2).prop_map(Op::Grant),
        8 => (0u8..2).prop_map(Op::Deny),
        8 => (0u8..2).prop_map(Op::Decision),
        8 => Just(Op::Note),
        8 => (0u8..2).prop_map(Op::Annotate),
    ]
}

fn role_set() -> impl Strategy<Value = BTreeSet<Role>> {
    proptest::collection::btree_set(
        prop_oneof![
            Just(Role::ReleaseManager),
            Just(Role::Approver),
            Just(Role::Sre),
            Just(Role::GovernanceAdmin),
            Just(Role::Service),
            Just(Role::Auditor),
            Just(Role::Viewer),
        ],
        0..3,
    )
}

/// A fixed core team plus random actors (random roles, sometimes another team).
fn actors() -> impl Strategy<Value = Vec<Actor>> {
    proptest::collection::vec((role_set(), any::<bool>()), 3).prop_map(|random| {
        let mut pool = vec![rita(), ann(), abe(), sam(), gus(), bot()];
        for (i, (roles, foreign)) in random.into_iter().enumerate() {
            let teams = if foreign {
                TeamScope::parse(["api"]).unwrap()
            } else {
                TeamScope::parse(["web"]).unwrap()
            };
            pool.push(Actor::new(id(&format!("random{i}")), roles, teams));
        }
        pool
    })
}

fn policy_strategy() -> impl Strategy<Value = PolicySnapshot> {
    (
        prop_oneof![Just(600i64), Just(3600), Just(7 * 86_400)],
        proptest::option::of((0i64..50_000, 1i64..20_000)),
    )
        .prop_map(|(validity, freeze)| {
            let mut p = policy();
            p.version = 1;
            p.approval_validity_seconds = validity;
            if let Some((start, len)) = freeze {
                p.freezes.push(FreezeWindow {
                    id: FreezeId::new(Uuid::from_u128(1)),
                    starts_at: at(start),
                    ends_at: at(start + len),
                    reason: "freeze".into(),
                });
            }
            p
        })
}

/// The actor who would usually issue `op` (so that sequences make progress).
fn natural(op: &Op, pick: usize) -> Actor {
    match op {
        Op::Approve(_) | Op::Reject(_) => [ann(), abe(), sam(), gus()][pick % 4].clone(),
        Op::SignOff(1) | Op::Pause | Op::Resume => sam(),
        Op::Readings(..) => bot(),
        Op::Grant(_) | Op::Deny(_) => gus(),
        Op::RequestDeviation(..) => [rita(), sam(), ann()][pick % 3].clone(),
        Op::Decision(_) | Op::Annotate(_) => ann(),
        _ => rita(),
    }
}

/// `latest` is the most recently requested advance: most request-targeting
/// ops aim at it, the others at a small pool of possibly unknown ids.
fn command(op: &Op, now: i64, step: usize, latest: Option<RequestId>) -> C {
    let target = |r: u8| match (r, latest) {
        (0, Some(l)) => l,
        _ => rid(r as u128),
    };
    let dev = |n: u8| DeviationId::new(Uuid::from_u128(0xd00 + n as u128));
    match op {
        Op::SignOff(k) => C::SignOffReadiness {
            item_key: ["qa", "runbook", "unknown"][*k as usize].into(),
        },
        Op::Start => C::Start,
        Op::Revise => C::RevisePlan { plan: test_plan() },
        Op::Request(r) => C::RequestAdvance {
            request_id: if *r == 0 {
                rid(1000 + step as u128)
            } else {
                rid(1)
            },
        },
        Op::Approve(r) => C::Approve {
            request_id: target(*r),
            comment: None,
        },
        Op::Reject(r) => C::Reject {
            request_id: target(*r),
            comment: "no".into(),
        },
        Op::Withdraw(r) => C::WithdrawRequest {
            request_id: target(*r),
        },
        Op::Advance(r, o) => C::Advance {
            request_id: target(*r),
            inconclusive_override: o.then(|| "accepted risk".to_owned()),
        },
        Op::Readings(v, n) => C::RecordReadings {
            readings: vec![reading(
                "error_rate",
                [0.001, 0.02, 0.3][*v as usize],
                [5, 500][*n as usize],
                now,
            )],
        },
        Op::Pause => C::Pause {
            reason: "hold".into(),
        },
        Op::Resume => C::Resume,
        Op::Rollback(t, with_reason) => C::Rollback {
            to_stage: t.map(|t| StageIndex::new(t as u32)),
            reason: if *with_reason {
                "bad".into()
            } else {
                String::new()
            },
        },
        Op::Complete => C::Complete,
        Op::Abort => C::Abort {
            reason: "stop".into(),
        },
        Op::RequestDeviation(d, rules, expires) => C::RequestDeviation {
            deviation_id: dev(*d),
            rules: rules
                .iter()
                .map(|r| [Rule::R4, Rule::R6, Rule::R9, Rule::R2][*r as usize])
                .collect(),
            justification: "needed".into(),
            expires_at: at(now + expires),
        },
        Op::Grant(d) => C::GrantDeviation {
            deviation_id: dev(*d),
            comment: String::new(),
        },
        Op::Deny(d) => C::DenyDeviation {
            deviation_id: dev(*d),
            comment: "no".into(),
        },
        Op::Decision(n) => C::RecordDecision {
            decision_id: DecisionId::new(Uuid::from_u128(*n as u128)),
            title: "t".into(),
            rationale: "r".into(),
            alternatives: vec![],
            outcome: "o".into(),
        },
        Op::Note => C::AddNote {
            audience: NoteAudience::Internal,
            text: "n".into(),
        },
        Op::Annotate(n) => C::Annotate {
            annotation_id: AnnotationId::new(Uuid::from_u128(*n as u128)),
            about: None,
            text: "a".into(),
        },
    }
}

/// Checks an `Advanced` event against the state it was decided on.
fn check_advance(before: &RolloutState, event: &E, now: i64) -> Result<bool, TestCaseError> {
    let E::Advanced {
        request_id,
        from_stage,
        to_stage,
        counted_approvals,
        deviations_used,
        waived,
        ..
    } = event
    else {
        return Ok(false);
    };
    let r = before.rollout().unwrap();
    let req = &r.requests[request_id];
    prop_assert_eq!(*from_stage, r.position);
    prop_assert_eq!(
        to_stage.get(),
        from_stage.map_or(0, |s| s.get() + 1),
        "advances move one stage at a time"
    );
    let rules = &r.plan.stage(*to_stage).unwrap().approvals;
    let mut people = BTreeSet::new();
    let mut per_rule: BTreeMap<usize, u32> = BTreeMap::new();
    for c in counted_approvals {
        prop_assert!(
            people.insert(c.approver.clone()),
            "counted twice: {}",
            c.approver
        );
        prop_assert_ne!(&c.approver, &req.requested_by, "requester counted");
        let valid = req
            .approvals
            .iter()
            .filter(|a| a.approver == c.approver && a.is_valid(r.plan_revision, at(now)))
            .collect::<Vec<_>>();
        prop_assert!(!valid.is_empty(), "counted an invalid approval");
        prop_assert!(
            valid
                .iter()
                .any(|a| !a.roles.is_disjoint(&rules[c.rule].roles)),
            "approver lacks the rule's role"
        );
        *per_rule.entry(c.rule).or_default() += 1;
    }
    let quorum_met = rules
        .iter()
        .enumerate()
        .all(|(i, q)| per_rule.get(&i).copied().unwrap_or(0) == q.count);
    let waived_approvals = waived.iter().any(|w| w.condition == "approvals");
    prop_assert!(
        quorum_met || (waived_approvals && !deviations_used.is_empty()),
        "advanced without quorum or deviation"
    );
    for d in deviations_used {
        let dev = &r.deviations[d];
        prop_assert_eq!(
            dev.status,
            rollgate_domain::rollout::DeviationStatus::Granted
        );
        prop_assert_eq!(dev.stage, r.position);
        prop_assert!(dev.expires_at > at(now));
        prop_assert_ne!(dev.decided_by.as_ref(), Some(&dev.requested_by));
    }
    Ok(true)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_histories_keep_the_invariants(
        pool in actors(),
        policy in policy_strategy(),
        start in 0u8..5,
        steps in proptest::collection::vec((op(), 0usize..24, 0i64..5000), 1..120),
    ) {
        let base = match start {
            0 => Scenario::created(),
            1 => Scenario::ready(),
            _ => Scenario::running(),
        };
        let mut s = base.with_policy(policy.clone());
        let mut now = 0i64;
        let mut highest_legit: Option<StageIndex> = s.state.rollout().unwrap().position;
        let mut latest: Option<RequestId> = None;
        for (step, (op, who, dt)) in steps.into_iter().enumerate() {
            now += dt;
            let natural_actor;
            let actor = if who < pool.len() {
                &pool[who]
            } else {
                natural_actor = natural(&op, who);
                &natural_actor
            };
            let ctx = ctx_with(actor, now, policy.clone());
            let before = s.state.clone();
            let was_terminal = before.status().is_some_and(|st| st.is_terminal());
            match decide(&before, command(&op, now, step, latest), &ctx) {
                Err(e) => {
                    // a refusal always explains itself
                    prop_assert!(!e.to_string().is_empty());
                }
                Ok(events) => {
                    prop_assert!(!was_terminal || events.iter().all(|e| matches!(
                        e,
                        E::DecisionRecorded { .. } | E::NoteAdded { .. } | E::Annotated { .. }
                    )), "terminal state changed: {:?}", events);
                    let mut state = before.clone();
                    for e in &events {
                        // stored form round-trips unchanged
                        let back = E::from_stored(e.event_type(), e.schema_version(), e.payload())
                            .map_err(|err| TestCaseError::fail(err.to_string()))?;
                        prop_assert_eq!(&back, e);
                        if check_advance(&state, e, now)? {
                            let E::Advanced { to_stage, .. } = e else { unreachable!() };
                            highest_legit = highest_legit.max(Some(*to_stage));
                        }
                        if let E::AdvanceRequested { request_id, .. } = e {
                            latest = Some(*request_id);
                        }
                        if let E::RolloutStarted { stage, .. } = e {
                            highest_legit = highest_legit.max(Some(*stage));
                        }
                        if let E::AdvanceApproved { request_id, approver, .. } = e {
                            let req = &state.rollout().unwrap().requests[request_id];
                            prop_assert_ne!(approver, &req.requested_by);
                            let r = state.rollout().unwrap();
                            prop_assert!(!req.valid_approvals(r.plan_revision, at(now))
                                .iter().any(|a| &a.approver == approver), "R3");
                        }
                        if let E::RolledBack { from_stage, to_stage, reason, .. } = e {
                            prop_assert!(to_stage < from_stage);
                            prop_assert!(!reason.trim().is_empty());
                        }
                        prop_assert_eq!(e.at(), at(now));
                        state = evolve(state, e);
                    }
                    s.state = state;
                    s.events.extend(events);
                }
            }
            // folding from scratch reproduces the incremental state
            prop_assert_eq!(&RolloutState::from_events(&s.events), &s.state);
            let r = s.state.rollout().unwrap();
            if was_terminal {
                prop_assert_eq!(Some(r.status), before.status());
            }
            // never beyond the highest stage legitimately entered
            prop_assert!(r.position <= highest_legit, "{:?} > {:?}", r.position, highest_legit);
        }
    }
}
