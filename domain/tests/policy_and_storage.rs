//! The policy decider, and the stored form of events (type, schema version,
//! payload, upcasting, summaries).

mod common;

use std::collections::BTreeSet;

use common::*;
use rollgate_domain::policy::{
    decide_policy, evolve_policy, PolicyCommand as P, PolicyEvent, PolicyState,
};
use rollgate_domain::rollout::{RolloutCommand as C, RolloutEvent, ROLLED_BACK_SCHEMA_VERSION};
use rollgate_domain::{
    DecodeError, ErrorKind, FreezeId, PolicyContext, Role, Rule, StageIndex, TeamScope,
};
use serde_json::json;
use uuid::Uuid;

fn pctx(actor: &rollgate_domain::Actor, secs: i64) -> PolicyContext {
    PolicyContext {
        actor: actor.clone(),
        now: at(secs),
        team: team(),
    }
}

fn fold(events: &[PolicyEvent]) -> PolicyState {
    events.iter().fold(PolicyState::default(), evolve_policy)
}

fn publish(validity: i64) -> P {
    P::Publish {
        approval_validity_seconds: validity,
        deviation_granter_roles: BTreeSet::from([Role::GovernanceAdmin]),
    }
}

fn fid(n: u128) -> FreezeId {
    FreezeId::new(Uuid::from_u128(n))
}

#[test]
fn versions_start_at_one_and_increase_per_publish() {
    let s0 = PolicyState::default();
    assert_eq!(
        s0.snapshot(),
        rollgate_domain::PolicySnapshot::default_for(&team())
    );
    let e1 = decide_policy(&s0, publish(3600), &pctx(&gus(), 0)).unwrap();
    assert!(matches!(
        e1[0],
        PolicyEvent::PolicyPublished { version: 1, .. }
    ));
    let s1 = fold(&e1);
    let e2 = decide_policy(&s1, publish(7200), &pctx(&gus(), 10)).unwrap();
    assert!(matches!(
        e2[0],
        PolicyEvent::PolicyPublished { version: 2, .. }
    ));
    let snap = evolve_policy(s1, &e2[0]).snapshot();
    assert_eq!(snap.version, 2);
    assert_eq!(snap.approval_validity_seconds, 7200);
}

#[test]
fn only_governance_admins_of_the_team_change_policy() {
    let s = PolicyState::default();
    let e = decide_policy(&s, publish(3600), &pctx(&rita(), 0)).unwrap_err();
    assert_eq!(e.rule(), Some(Rule::Permission));
    let e = decide_policy(&s, publish(3600), &pctx(&auditor(), 0)).unwrap_err();
    assert_eq!(e.rule(), Some(Rule::R10));
    let foreign = rollgate_domain::Actor::new(
        id("gia"),
        [Role::GovernanceAdmin],
        TeamScope::parse(["api"]).unwrap(),
    );
    let e = decide_policy(&s, publish(3600), &pctx(&foreign, 0)).unwrap_err();
    assert_eq!(e.rule(), Some(Rule::R11));
    let e = decide_policy(&s, publish(0), &pctx(&gus(), 0)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Validation);
}

#[test]
fn freezes_are_declared_checked_and_lifted() {
    let declare = P::DeclareFreeze {
        freeze_id: fid(1),
        starts_at: at(100),
        ends_at: at(200),
        reason: "holiday".into(),
    };
    let events = decide_policy(&PolicyState::default(), declare.clone(), &pctx(&gus(), 0)).unwrap();
    let s = fold(&events);
    let snap = s.snapshot();
    assert!(snap.is_frozen_at(at(99)).is_none());
    assert_eq!(snap.is_frozen_at(at(100)).unwrap().reason, "holiday");
    assert!(snap.is_frozen_at(at(200)).is_none());
    // the same id twice
    assert_eq!(
        decide_policy(&s, declare, &pctx(&gus(), 0))
            .unwrap_err()
            .kind(),
        ErrorKind::Conflict
    );
    // end before start
    let bad = P::DeclareFreeze {
        freeze_id: fid(2),
        starts_at: at(200),
        ends_at: at(100),
        reason: "x".into(),
    };
    let e = decide_policy(&s, bad, &pctx(&gus(), 0)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Validation);
    // lift
    let lifted =
        decide_policy(&s, P::LiftFreeze { freeze_id: fid(1) }, &pctx(&gus(), 150)).unwrap();
    let s2 = lifted.iter().fold(s, evolve_policy);
    assert!(s2.snapshot().is_frozen_at(at(150)).is_none());
    let e =
        decide_policy(&s2, P::LiftFreeze { freeze_id: fid(1) }, &pctx(&gus(), 160)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
}

#[test]
fn policy_events_round_trip_and_summarise() {
    let mut events =
        decide_policy(&PolicyState::default(), publish(3600), &pctx(&gus(), 0)).unwrap();
    events.extend(
        decide_policy(
            &PolicyState::default(),
            P::DeclareFreeze {
                freeze_id: fid(1),
                starts_at: at(100),
                ends_at: at(200),
                reason: "holiday".into(),
            },
            &pctx(&gus(), 0),
        )
        .unwrap(),
    );
    for e in events {
        let back =
            PolicyEvent::from_stored(e.event_type(), e.schema_version(), e.payload()).unwrap();
        assert_eq!(back, e);
        assert!(!e.summary().is_empty());
    }
}

// --- rollout events in storage ------------------------------------------------------

fn every_kind_of_event() -> Vec<RolloutEvent> {
    let s = Scenario::approved()
        .run(
            &sam(),
            40,
            C::RequestDeviation {
                deviation_id: rollgate_domain::DeviationId::new(Uuid::from_u128(1)),
                rules: vec![Rule::R9],
                justification: "x".into(),
                expires_at: at(100_000),
            },
        )
        .run(
            &gus(),
            50,
            C::DenyDeviation {
                deviation_id: rollgate_domain::DeviationId::new(Uuid::from_u128(1)),
                comment: "no".into(),
            },
        )
        .run(
            &rita(),
            3600,
            C::Advance {
                request_id: rid(1),
                inconclusive_override: None,
            },
        )
        .readings(vec![reading("error_rate", 0.5, 50, 3700)], 3700)
        .run(&sam(), 3800, C::Resume)
        .run(
            &rita(),
            3900,
            C::Rollback {
                to_stage: None,
                reason: "bad".into(),
            },
        )
        .run(
            &ann(),
            4000,
            C::RecordDecision {
                decision_id: rollgate_domain::DecisionId::new(Uuid::from_u128(1)),
                title: "t".into(),
                rationale: "r".into(),
                alternatives: vec!["a".into()],
                outcome: "o".into(),
            },
        )
        .run(
            &rita(),
            4100,
            C::AddNote {
                audience: rollgate_domain::NoteAudience::Internal,
                text: "n".into(),
            },
        )
        .run(
            &sam(),
            4200,
            C::Annotate {
                annotation_id: rollgate_domain::AnnotationId::new(Uuid::from_u128(1)),
                about: None,
                text: "a".into(),
            },
        )
        .run(
            &rita(),
            4300,
            C::Abort {
                reason: "stop".into(),
            },
        );
    s.events
}

#[test]
fn every_event_round_trips_through_its_stored_form() {
    let events = every_kind_of_event();
    let types: BTreeSet<_> = events.iter().map(|e| e.event_type()).collect();
    assert!(types.len() >= 17, "{types:?}");
    for e in &events {
        let payload = e.payload();
        assert!(
            payload.get("type").is_none(),
            "payload holds the fields only"
        );
        let back = RolloutEvent::from_stored(e.event_type(), e.schema_version(), payload).unwrap();
        assert_eq!(&back, e);
        assert!(!e.summary().is_empty());
    }
}

#[test]
fn rolled_back_v1_payloads_are_upcast() {
    let v1 = json!({
        "from_stage": 1,
        "to_stage": null,
        "reason": "errors",
        "rolled_back_by": "sam",
        "plan_revision": 1,
        "policy_version": 0,
        "at": "2026-03-02T10:00:00Z"
    });
    let e = RolloutEvent::from_stored("RolledBack", 1, v1).unwrap();
    let RolloutEvent::RolledBack {
        automatic,
        from_stage,
        ..
    } = &e
    else {
        panic!()
    };
    assert!(!automatic);
    assert_eq!(*from_stage, Some(StageIndex::new(1)));
    assert_eq!(e.schema_version(), ROLLED_BACK_SCHEMA_VERSION);
    assert_eq!(e.payload()["automatic"], json!(false));
}

#[test]
fn decoding_refuses_unknown_types_versions_and_payloads() {
    assert!(matches!(
        RolloutEvent::from_stored("Exploded", 1, json!({})),
        Err(DecodeError::UnknownEventType(_))
    ));
    assert!(matches!(
        RolloutEvent::from_stored("Paused", 9, json!({})),
        Err(DecodeError::UnsupportedSchemaVersion { .. })
    ));
    assert!(matches!(
        RolloutEvent::from_stored("Paused", 1, json!({"reason": 1})),
        Err(DecodeError::Payload { .. })
    ));
}

#[test]
fn summaries_read_as_sentences() {
    let events = Scenario::approved().events;
    let summaries: Vec<_> = events.iter().map(RolloutEvent::summary).collect();
    assert_eq!(
        summaries[0],
        "rita created rollout checkout-one-click (One-click checkout) for team web with 3 stages"
    );
    assert!(summaries.contains(&"rita requested an advance from stage 0 to stage 1".to_owned()));
    assert!(summaries.contains(
        &"ann (approver) approved advance request 00000000-0000-0000-0000-000000000001".to_owned()
    ));
}
