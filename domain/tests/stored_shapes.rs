//! The stored shape of every event type, per schema version, against saved
//! payloads in `tests/fixtures/events/{rollout,policy}/<Type>.v<N>.json`.
//!
//! - every type and every schema version from 1 to the current one has a saved
//!   payload, and it decodes (older versions through the upcasters);
//! - the current version's saved payload is exactly what this build writes for
//!   a sample event of that type, and decoding it and writing it again gives
//!   the same bytes: a change of a stored shape fails here until the type's
//!   schema version is bumped (with an upcaster) and the new shape is saved;
//! - no saved payload names an unknown type or version.
//!
//! `ROLLGATE_WRITE_FIXTURES=1 cargo test -p rollgate-domain --test stored_shapes`
//! writes the payloads that are missing (never overwrites one: a saved
//! payload is history).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use rollgate_domain::policy::{decide_policy, PolicyCommand as P, PolicyEvent, PolicyState};
use rollgate_domain::rollout::{RolloutCommand as C, RolloutEvent};
use rollgate_domain::{
    AnnotationId, DecisionId, DeviationId, FreezeId, NoteAudience, PolicyContext, Role, Rule,
    StageIndex,
};
use serde_json::Value;
use uuid::Uuid;

fn dir(stream: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/events")
        .join(stream)
}

fn saved(stream: &str, event_type: &str, version: u32) -> Option<Value> {
    let path = dir(stream).join(format!("{event_type}.v{version}.json"));
    let text = std::fs::read_to_string(&path).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn write_missing(stream: &str, event_type: &str, version: u32, payload: &Value) {
    if std::env::var_os("ROLLGATE_WRITE_FIXTURES").is_none() {
        return;
    }
    let path = dir(stream).join(format!("{event_type}.v{version}.json"));
    if !path.exists() {
        std::fs::create_dir_all(dir(stream)).unwrap();
        let text = serde_json::to_string_pretty(payload).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
    }
}

fn did(n: u128) -> DeviationId {
    DeviationId::new(Uuid::from_u128(0xd0 + n))
}

/// One sample of every rollout event type, from histories run through `decide`.
fn rollout_samples() -> BTreeMap<&'static str, RolloutEvent> {
    let at_stage_1 = Scenario::at_stage_1();
    let completed = at_stage_1
        .clone()
        .run(&rita(), 3700, C::RequestAdvance { request_id: rid(2) })
        .approve(&ann(), 2, 3800)
        .approve(&gus(), 2, 3800)
        .run(
            &rita(),
            7200,
            C::Advance {
                request_id: rid(2),
                inconclusive_override: None,
            },
        )
        .run(&rita(), 7300, C::Complete);
    let histories = [
        completed,
        Scenario::approved().run(&rita(), 100, C::RevisePlan { plan: test_plan() }),
        Scenario::requested().run(
            &ann(),
            20,
            C::Reject {
                request_id: rid(1),
                comment: "error budget spent".into(),
            },
        ),
        Scenario::requested().run(&rita(), 20, C::WithdrawRequest { request_id: rid(1) }),
        // a breach at stage 1 pauses; then resume
        at_stage_1
            .clone()
            .readings(vec![reading("error_rate", 0.3, 20, 3700)], 3700)
            .run(&sam(), 3800, C::Resume),
        // a breach at stage 0 rolls back automatically
        Scenario::running().readings(vec![reading("error_rate", 0.3, 20, 100)], 100),
        Scenario::requested()
            .run(
                &sam(),
                20,
                C::RequestDeviation {
                    deviation_id: did(1),
                    rules: vec![Rule::R4, Rule::R9],
                    justification: "hotfix before the sale".into(),
                    expires_at: at(86_400),
                },
            )
            .run(
                &gus(),
                30,
                C::GrantDeviation {
                    deviation_id: did(1),
                    comment: "once".into(),
                },
            )
            .run(
                &sam(),
                40,
                C::RequestDeviation {
                    deviation_id: did(2),
                    rules: vec![Rule::R6],
                    justification: "stale approvals".into(),
                    expires_at: at(86_400),
                },
            )
            .run(
                &gus(),
                50,
                C::DenyDeviation {
                    deviation_id: did(2),
                    comment: "ask again".into(),
                },
            )
            .run(
                &ann(),
                60,
                C::RecordDecision {
                    decision_id: DecisionId::new(Uuid::from_u128(0xde)),
                    title: "Hold the beta".into(),
                    rationale: "support is short-staffed".into(),
                    alternatives: vec!["advance now".into()],
                    outcome: "wait a day".into(),
                },
            )
            .run(
                &rita(),
                70,
                C::AddNote {
                    audience: NoteAudience::External,
                    text: "Checkout gets faster this week".into(),
                },
            )
            .run(
                &sam(),
                80,
                C::Annotate {
                    annotation_id: AnnotationId::new(Uuid::from_u128(0xa0)),
                    about: Some("position 7".into()),
                    text: "the spike was a load test".into(),
                },
            )
            .run(
                &rita(),
                90,
                C::Abort {
                    reason: "superseded".into(),
                },
            ),
    ];
    let mut samples = BTreeMap::new();
    for h in histories {
        for e in h.events {
            samples.entry(e.event_type()).or_insert(e);
        }
    }
    samples
}

fn policy_samples() -> BTreeMap<&'static str, PolicyEvent> {
    let ctx = |secs| PolicyContext {
        actor: gus(),
        now: at(secs),
        team: team(),
    };
    let mut state = PolicyState::default();
    let mut samples = BTreeMap::new();
    for (secs, cmd) in [
        (
            0,
            P::Publish {
                approval_validity_seconds: 3600,
                deviation_granter_roles: [Role::GovernanceAdmin, Role::Sre].into(),
            },
        ),
        (
            10,
            P::DeclareFreeze {
                freeze_id: FreezeId::new(Uuid::from_u128(0xf1)),
                starts_at: at(100),
                ends_at: at(200),
                reason: "black friday".into(),
            },
        ),
        (
            20,
            P::LiftFreeze {
                freeze_id: FreezeId::new(Uuid::from_u128(0xf1)),
            },
        ),
    ] {
        for e in decide_policy(&state, cmd, &ctx(secs)).unwrap() {
            state = rollgate_domain::evolve_policy(state, &e);
            samples.entry(e.event_type()).or_insert(e);
        }
    }
    samples
}

/// Checks one stream; `decode(type, version, payload)` and `encode(sample)`.
fn check_stream<E: std::fmt::Debug + PartialEq>(
    stream: &str,
    types: &[&str],
    current: impl Fn(&str) -> Option<u32>,
    samples: &BTreeMap<&'static str, E>,
    encode: impl Fn(&E) -> Value,
    decode: impl Fn(&str, u32, Value) -> Result<E, rollgate_domain::DecodeError>,
) {
    let names: Vec<_> = samples.keys().copied().collect();
    assert_eq!(
        names.len(),
        types.len(),
        "a sample of every type: {names:?}"
    );
    for &event_type in types {
        let sample = &samples[event_type];
        let version = current(event_type).unwrap();
        write_missing(stream, event_type, version, &encode(sample));
        for v in 1..=version {
            let payload = saved(stream, event_type, v).unwrap_or_else(|| {
                panic!("no saved payload tests/fixtures/events/{stream}/{event_type}.v{v}.json")
            });
            let decoded = decode(event_type, v, payload.clone())
                .unwrap_or_else(|e| panic!("{event_type} v{v} does not decode: {e}"));
            if v == version {
                assert_eq!(
                    encode(&decoded),
                    payload,
                    "{event_type} v{v}: decoding and writing again changes the payload"
                );
                assert_eq!(
                    &decoded, sample,
                    "{event_type} v{v}: the saved payload is not what this build writes; \
                     bump the schema version, add an upcaster and save the new shape"
                );
            }
        }
    }
    // nothing saved for unknown types or versions
    for entry in std::fs::read_dir(dir(stream)).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let (event_type, version) = name
            .strip_suffix(".json")
            .and_then(|n| n.split_once(".v"))
            .unwrap_or_else(|| panic!("unexpected file {name}"));
        let version: u32 = version.parse().unwrap();
        let current = current(event_type).unwrap_or_else(|| panic!("unknown type in {name}"));
        assert!(
            (1..=current).contains(&version),
            "unknown version in {name}"
        );
    }
}

#[test]
fn every_rollout_event_type_and_version_matches_its_saved_payload() {
    check_stream(
        "rollout",
        RolloutEvent::event_types(),
        RolloutEvent::schema_version_of,
        &rollout_samples(),
        RolloutEvent::payload,
        RolloutEvent::from_stored,
    );
}

#[test]
fn every_policy_event_type_and_version_matches_its_saved_payload() {
    check_stream(
        "policy",
        PolicyEvent::event_types(),
        PolicyEvent::schema_version_of,
        &policy_samples(),
        PolicyEvent::payload,
        PolicyEvent::from_stored,
    );
}

#[test]
fn samples_reach_the_stages_they_claim() {
    let samples = rollout_samples();
    assert!(matches!(
        samples["Advanced"],
        RolloutEvent::Advanced { to_stage, .. } if to_stage == StageIndex::new(1)
    ));
    assert!(matches!(
        samples["RolledBack"],
        RolloutEvent::RolledBack {
            automatic: true,
            ..
        }
    ));
}
