//! External bindings, given / when / then: who may bind, rotate and revoke;
//! secrets stored hashed and checked in constant time; gate answers recorded
//! on change plus a heartbeat; checksums tying an approval round to one canary.

mod common;

use common::*;
use rollgate_domain::binding::{
    answer_flagger, answer_poll, decide_binding, evolve_binding, flagger_target_matches,
    BindingCommand as B, BindingContext, BindingError, BindingEvent, BindingId, BindingState,
    BindingStatus, FlaggerCall, FlaggerHook, GateAnswer, SecretHash, Target, Tool, ToolAnswer,
    HEARTBEAT_SECONDS,
};
use rollgate_domain::gate::{Effect, GateVerdict, Reason, ReasonDetail, Transition};
use rollgate_domain::{Actor, ActorId, ErrorKind, Role, Rule, StageIndex, Team, TeamScope};
use uuid::Uuid;

const SECRET: &str = "rgb_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
const NEW_SECRET: &str = "rgb_ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvuts";

fn binding_id() -> BindingId {
    BindingId::new(Uuid::from_u128(0xb1))
}

fn canary() -> Target {
    Target::FlaggerCanary {
        namespace: "test".into(),
        name: "podinfo".into(),
    }
}

fn bctx(actor: &Actor, secs: i64) -> BindingContext {
    BindingContext {
        actor: actor.clone(),
        now: at(secs),
    }
}

fn flagger() -> Actor {
    Actor::new(
        ActorId::parse("flagger:test/podinfo").unwrap(),
        [Role::Service],
        TeamScope::parse(["web"]).unwrap(),
    )
}

fn bind_cmd(target: Target) -> B {
    B::Bind {
        binding_id: binding_id(),
        team: team(),
        rollout_id: rollout_id(),
        target,
        secret_hash: SecretHash::of(SECRET),
    }
}

/// Runs commands, panicking on refusal.
fn history(steps: &[(Actor, i64, B)]) -> (BindingState, Vec<BindingEvent>) {
    let mut state = BindingState::default();
    let mut all = Vec::new();
    for (who, secs, cmd) in steps {
        let events = decide_binding(&state, cmd.clone(), &bctx(who, *secs))
            .unwrap_or_else(|e| panic!("{cmd:?} refused: {e}"));
        for e in &events {
            state = evolve_binding(state, e);
        }
        all.extend(events);
    }
    (state, all)
}

fn bound() -> BindingState {
    history(&[(gus(), 0, bind_cmd(canary()))]).0
}

fn wait_reason(code: &str) -> Reason {
    let detail = match code {
        "soak" => ReasonDetail::Soak {
            stage: StageIndex::FIRST,
            required_seconds: 3600,
            soaked_seconds: 10,
            remaining_seconds: 3590,
        },
        _ => ReasonDetail::Paused,
    };
    Reason::new(detail, Effect::Wait, Some(Rule::R4))
}

fn answer(verdict: GateVerdict, reasons: Vec<Reason>, checksum: &str, request: u128) -> GateAnswer {
    GateAnswer {
        tool: Tool::Flagger,
        hook: Some("confirm-promotion".into()),
        transition: Transition::Advance {
            to_stage: StageIndex::new(1),
        },
        verdict,
        reasons,
        summary: "advance to stage 1 wait: soak running".into(),
        checksum: Some(checksum.into()),
        request_id: Some(rid(request)),
    }
}

fn ask(secret: Option<&str>, a: GateAnswer) -> B {
    B::RecordGateAnswer {
        presented_secret: secret.map(str::to_owned),
        answer: a,
    }
}

fn when(
    state: &BindingState,
    who: &Actor,
    secs: i64,
    cmd: B,
) -> Result<Vec<BindingEvent>, BindingError> {
    decide_binding(state, cmd, &bctx(who, secs))
}

fn apply(mut state: BindingState, events: &[BindingEvent]) -> BindingState {
    for e in events {
        state = evolve_binding(state, e);
    }
    state
}

// --- bind, rotate, revoke ----------------------------------------------------------

#[test]
fn a_governance_admin_binds_a_canary_with_a_hashed_secret() {
    let events = when(&BindingState::default(), &gus(), 0, bind_cmd(canary())).unwrap();
    let [BindingEvent::BindingCreated {
        secret_hash,
        secret_version,
        target,
        bound_by,
        ..
    }] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert_eq!((*secret_version, bound_by.as_str()), (1, "gus"));
    assert_eq!(target, &canary());
    assert!(secret_hash.matches(SECRET));
    assert_eq!(secret_hash.as_str().len(), 64, "hex SHA-256");
    let stored = serde_json::to_string(&events[0].payload()).unwrap();
    assert!(!stored.contains(SECRET), "the secret never enters the log");
    assert!(!events[0].summary().contains(secret_hash.as_str()));
    assert_eq!(binding_id().stream(), format!("binding-{}", binding_id()));
    assert_eq!(
        BindingId::of_stream(&binding_id().stream()),
        Some(binding_id())
    );
}

#[test]
fn only_governance_admins_of_the_team_bind() {
    let e = when(&BindingState::default(), &rita(), 0, bind_cmd(canary())).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Forbidden));
    assert_eq!(e.rule(), Some(Rule::Permission));
    let e = when(&BindingState::default(), &auditor(), 0, bind_cmd(canary())).unwrap_err();
    assert_eq!(e.rule(), Some(Rule::R10));
    let other_admin = Actor::new(
        id("greta"),
        [Role::GovernanceAdmin],
        TeamScope::parse(["api"]).unwrap(),
    );
    let e = when(
        &BindingState::default(),
        &other_admin,
        0,
        bind_cmd(canary()),
    )
    .unwrap_err();
    assert_eq!(e, BindingError::NotFound);
    // and on an existing binding too: other teams see nothing
    let e = when(&bound(), &other_admin, 5, B::Revoke { reason: "x".into() }).unwrap_err();
    assert_eq!(e, BindingError::NotFound);
}

#[test]
fn targets_are_validated() {
    for (target, field) in [
        (
            Target::FlaggerCanary {
                namespace: "Test".into(),
                name: "podinfo".into(),
            },
            "target.namespace",
        ),
        (
            Target::ArgoRollout {
                namespace: "test".into(),
                name: "-bad".into(),
            },
            "target.name",
        ),
        (Target::FlagKey { key: " ".into() }, "target.key"),
        (
            Target::GithubEnvironment {
                repository: "no-slash".into(),
                environment: "production".into(),
            },
            "target.repository",
        ),
    ] {
        let Err(BindingError::Refused(rollgate_domain::DomainError::Validation(errors))) = when(
            &BindingState::default(),
            &gus(),
            0,
            bind_cmd(target.clone()),
        ) else {
            panic!("{target:?} accepted")
        };
        assert!(errors.has_field(field), "{target:?}: {errors}");
    }
    let ok = Target::GithubEnvironment {
        repository: "acme/shop".into(),
        environment: "production".into(),
    };
    assert!(when(&BindingState::default(), &gus(), 0, bind_cmd(ok)).is_ok());
    assert_eq!(canary().tool(), Tool::Flagger);
}

#[test]
fn rotation_replaces_the_secret() {
    let (state, _) = history(&[
        (gus(), 0, bind_cmd(canary())),
        (
            gwen(),
            10,
            B::RotateSecret {
                secret_hash: SecretHash::of(NEW_SECRET),
            },
        ),
    ]);
    let b = state.binding().unwrap();
    assert_eq!(b.secret_version, 2);
    let a = answer(
        GateVerdict::Wait,
        vec![wait_reason("soak")],
        "85d557f47b",
        1,
    );
    assert_eq!(
        when(&state, &flagger(), 20, ask(Some(SECRET), a.clone())).unwrap_err(),
        BindingError::Unauthenticated
    );
    assert_eq!(
        when(&state, &flagger(), 20, ask(Some(NEW_SECRET), a))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_revoked_binding_answers_no_secret() {
    let (state, events) = history(&[
        (gus(), 0, bind_cmd(canary())),
        (
            gus(),
            10,
            B::Revoke {
                reason: "canary deleted".into(),
            },
        ),
    ]);
    assert_eq!(state.binding().unwrap().status, BindingStatus::Revoked);
    assert!(events[1].summary().contains("revoked"));
    let a = answer(GateVerdict::Wait, vec![], "c", 1);
    assert_eq!(
        when(&state, &flagger(), 20, ask(Some(SECRET), a)).unwrap_err(),
        BindingError::Unauthenticated
    );
    let e = when(
        &state,
        &gus(),
        20,
        B::RotateSecret {
            secret_hash: SecretHash::of(NEW_SECRET),
        },
    )
    .unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Conflict));
    let e = when(&state, &gus(), 20, B::Revoke { reason: " ".into() }).unwrap_err();
    assert_eq!(e.kind(), Some(ErrorKind::Validation));
}

// --- secrets ---------------------------------------------------------------------------

#[test]
fn wrong_or_missing_secret_records_nothing() {
    let state = bound();
    let a = answer(
        GateVerdict::Wait,
        vec![wait_reason("soak")],
        "85d557f47b",
        1,
    );
    for presented in [
        None,
        Some(""),
        Some("wrong"),
        Some(&SECRET[..SECRET.len() - 1]),
    ] {
        assert_eq!(
            when(&state, &flagger(), 20, ask(presented, a.clone())).unwrap_err(),
            BindingError::Unauthenticated,
            "{presented:?}"
        );
    }
    let unknown = when(
        &BindingState::default(),
        &flagger(),
        20,
        ask(Some(SECRET), a),
    )
    .unwrap_err();
    assert_eq!(unknown, BindingError::Unauthenticated);
    assert_eq!(unknown.kind(), None, "answered 401");
}

#[test]
fn secret_hashes_match_exactly() {
    let h = SecretHash::of(SECRET);
    assert!(h.matches(SECRET));
    assert!(!h.matches(&format!("{SECRET} ")));
    assert!(!h.matches(&SECRET.to_uppercase()));
    assert_ne!(h, SecretHash::of(NEW_SECRET));
    let debug = format!("{h:?}");
    assert!(debug.len() < 30, "{debug}");
}

// --- gate answers ---------------------------------------------------------------

#[test]
fn gate_answers_are_recorded_on_change_and_as_a_heartbeat() {
    let state = bound();
    let waiting = answer(
        GateVerdict::Wait,
        vec![wait_reason("soak")],
        "85d557f47b",
        1,
    );

    // first answer: recorded
    let events = when(&state, &flagger(), 100, ask(Some(SECRET), waiting.clone())).unwrap();
    let [BindingEvent::GateAnswered {
        heartbeat,
        asked_by,
        answer: recorded,
        rollout_id: r,
        ..
    }] = events.as_slice()
    else {
        panic!("{events:?}")
    };
    assert!(!heartbeat);
    assert_eq!(asked_by.as_str(), "flagger:test/podinfo");
    assert_eq!(recorded, &waiting);
    assert_eq!(*r, rollout_id());
    assert!(
        events[0].summary().contains("confirm-promotion"),
        "{}",
        events[0].summary()
    );
    let state = apply(state, &events);

    // polled again 10 s later with the same answer: nothing
    assert!(
        when(&state, &flagger(), 110, ask(Some(SECRET), waiting.clone()))
            .unwrap()
            .is_empty()
    );
    // soak remaining changes but the blocking reasons are the same: nothing
    let mut later = waiting.clone();
    later.reasons = vec![Reason::new(
        ReasonDetail::Soak {
            stage: StageIndex::FIRST,
            required_seconds: 3600,
            soaked_seconds: 500,
            remaining_seconds: 3100,
        },
        Effect::Wait,
        Some(Rule::R4),
    )];
    assert!(
        when(&state, &flagger(), 590, ask(Some(SECRET), later.clone()))
            .unwrap()
            .is_empty()
    );

    // a heartbeat after the interval
    let events = when(
        &state,
        &flagger(),
        100 + HEARTBEAT_SECONDS,
        ask(Some(SECRET), later),
    )
    .unwrap();
    assert!(matches!(
        events.as_slice(),
        [BindingEvent::GateAnswered {
            heartbeat: true,
            ..
        }]
    ));
    assert!(events[0].summary().contains("still"));

    // a changed answer: recorded at once
    let allowed = answer(GateVerdict::Allow, vec![], "85d557f47b", 1);
    let events = when(&state, &flagger(), 120, ask(Some(SECRET), allowed)).unwrap();
    assert_eq!(events.len(), 1);
    // another blocking reason with the same verdict: recorded
    let paused = answer(
        GateVerdict::Wait,
        vec![wait_reason("paused")],
        "85d557f47b",
        1,
    );
    assert_eq!(
        when(&state, &flagger(), 130, ask(Some(SECRET), paused))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_new_checksum_after_approval_is_a_changed_canary() {
    let state = bound();
    let first = answer(
        GateVerdict::Wait,
        vec![wait_reason("soak")],
        "85d557f47b",
        1,
    );
    let state = apply(
        state.clone(),
        &when(&state, &flagger(), 100, ask(Some(SECRET), first)).unwrap(),
    );
    let b = state.binding().unwrap();
    assert_eq!(b.checksum_tie.as_ref().unwrap().checksum, "85d557f47b");
    assert_eq!(b.checksum_reason(Some(rid(1)), "85d557f47b"), None);
    let changed = b.checksum_reason(Some(rid(1)), "6c9f1e2a3b").unwrap();
    assert_eq!(changed.effect, Effect::Wait);
    assert!(changed.message.contains("canary changed since approval"));

    // the changed answer is recorded but does not move the tie
    let a = answer(GateVerdict::Wait, vec![changed], "6c9f1e2a3b", 1);
    let state = apply(
        state.clone(),
        &when(&state, &flagger(), 110, ask(Some(SECRET), a)).unwrap(),
    );
    let b = state.binding().unwrap();
    assert_eq!(b.checksum_tie.as_ref().unwrap().checksum, "85d557f47b");

    // a new approval round (request 2) ties the new checksum
    assert_eq!(b.checksum_reason(Some(rid(2)), "6c9f1e2a3b"), None);
    let a = answer(
        GateVerdict::Wait,
        vec![wait_reason("soak")],
        "6c9f1e2a3b",
        2,
    );
    let state = apply(
        state.clone(),
        &when(&state, &flagger(), 120, ask(Some(SECRET), a)).unwrap(),
    );
    let tie = state.binding().unwrap().checksum_tie.clone().unwrap();
    assert_eq!(
        (tie.request_id, tie.checksum.as_str()),
        (rid(2), "6c9f1e2a3b")
    );
    assert_eq!(state.binding().unwrap().checksum_reason(None, "x"), None);
}

#[test]
fn events_round_trip_through_storage() {
    let a = answer(
        GateVerdict::Wait,
        vec![wait_reason("soak")],
        "85d557f47b",
        1,
    );
    let (_, events) = history(&[
        (gus(), 0, bind_cmd(canary())),
        (flagger(), 5, ask(Some(SECRET), a)),
        (
            gus(),
            10,
            B::RotateSecret {
                secret_hash: SecretHash::of(NEW_SECRET),
            },
        ),
        (
            gus(),
            20,
            B::Revoke {
                reason: "done".into(),
            },
        ),
    ]);
    assert_eq!(events.len(), 4);
    for e in &events {
        let back =
            BindingEvent::from_stored(e.event_type(), e.schema_version(), e.payload()).unwrap();
        assert_eq!(&back, e);
        assert_eq!(e.binding_id(), binding_id());
        assert_eq!(e.team(), &Team::parse("web").unwrap());
    }
    assert!(BindingEvent::from_stored("Nope", 1, serde_json::json!({})).is_err());
    assert!(BindingEvent::from_stored("BindingRevoked", 9, events[3].payload()).is_err());
}

// --- Flagger calls ------------------------------------------------------------------

const FLAGGER_PAYLOAD: &str = include_str!("../../tests/fixtures/flagger/webhook-payload.json");

/// The documented payload with rollgate's metadata (the fixture's own
/// metadata keys are kept: Flagger passes whatever the spec says).
fn flagger_call(hook: &str, stage: Option<&str>, checksum: &str) -> FlaggerCall {
    let mut call: FlaggerCall = serde_json::from_str(FLAGGER_PAYLOAD).unwrap();
    call.checksum = checksum.to_owned();
    call.metadata.insert("hook".into(), hook.into());
    call.metadata
        .insert("binding_id".into(), binding_id().to_string());
    call.metadata.insert("secret".into(), SECRET.into());
    if let Some(stage) = stage {
        call.metadata.insert("stage".into(), stage.into());
    }
    call
}

fn answer_to(s: &Scenario, state: &BindingState, secs: i64, call: &FlaggerCall) -> ToolAnswer {
    let ask = call.ask().unwrap();
    let b = state.binding().unwrap();
    assert!(flagger_target_matches(b, call, &ask));
    answer_flagger(
        b,
        s.state.rollout().unwrap(),
        &s.policy,
        at(secs),
        call,
        &ask,
    )
}

#[test]
fn the_documented_payload_parses_and_needs_rollgate_metadata() {
    let call: FlaggerCall = serde_json::from_str(FLAGGER_PAYLOAD).unwrap();
    assert_eq!(
        (call.name.as_str(), call.namespace.as_str()),
        ("podinfo", "test")
    );
    assert_eq!(
        (call.phase.as_str(), call.checksum.as_str()),
        ("Progressing", "85d557f47b")
    );
    let errors = call.ask().unwrap_err();
    assert!(errors.has_field("metadata.binding_id"), "{errors}");
    assert!(errors.has_field("metadata.hook"), "{errors}");
    assert_eq!(call.secret(), None);

    let mut bad = flagger_call("confirm-everything", Some("one"), "c");
    let errors = bad.ask().unwrap_err();
    assert!(errors.has_field("metadata.hook") && errors.has_field("metadata.stage"));
    bad.metadata.insert("hook".into(), "rollback".into());
    bad.metadata.insert("stage".into(), "2".into());
    let ask = bad.ask().unwrap();
    assert_eq!(ask.hook, FlaggerHook::Rollback);
    assert_eq!(ask.stage, Some(StageIndex::new(2)));
}

#[test]
fn a_binding_answers_only_its_own_canary_and_rollout() {
    let state = bound();
    let b = state.binding().unwrap();
    let mut call = flagger_call("confirm-promotion", None, "c");
    let ask = call.ask().unwrap();
    assert!(flagger_target_matches(b, &call, &ask));
    call.name = "other".into();
    assert!(!flagger_target_matches(b, &call, &ask));
    let mut call = flagger_call("confirm-promotion", None, "c");
    call.metadata
        .insert("rollout_id".into(), Uuid::from_u128(0x999).to_string());
    let ask = call.ask().unwrap();
    assert!(!flagger_target_matches(b, &call, &ask));
}

#[test]
fn confirm_hooks_wait_then_proceed_with_the_gate() {
    let s = Scenario::approved();
    let state = bound();
    let call = flagger_call("confirm-promotion", Some("1"), "85d557f47b");
    let waiting = answer_to(&s, &state, 100, &call);
    assert!(!waiting.proceed);
    assert!(waiting.line.contains("soak running"), "{}", waiting.line);
    assert_eq!(waiting.answer.verdict, GateVerdict::Wait);
    assert_eq!(waiting.answer.request_id, Some(rid(1)));
    assert_eq!(waiting.answer.hook.as_deref(), Some("confirm-promotion"));
    assert!(!waiting.line.contains('\n'), "one line");

    let allowed = answer_to(&s, &state, 3600, &call);
    assert!(allowed.proceed, "{}", allowed.line);
    // without a stage the hook asks for the next transition: the same here
    let next = answer_to(
        &s,
        &state,
        3600,
        &flagger_call("confirm-rollout", None, "85d557f47b"),
    );
    assert_eq!(
        next.answer.transition,
        Transition::Advance {
            to_stage: StageIndex::new(1)
        }
    );
    assert!(next.proceed);
}

#[test]
fn a_changed_canary_after_approval_waits() {
    let s = Scenario::approved();
    let state = bound();
    let first = answer_to(
        &s,
        &state,
        100,
        &flagger_call("confirm-promotion", Some("1"), "85d557f47b"),
    );
    let events = when(&state, &flagger(), 100, ask(Some(SECRET), first.answer)).unwrap();
    let state = apply(state, &events);

    let same = answer_to(
        &s,
        &state,
        3600,
        &flagger_call("confirm-promotion", Some("1"), "85d557f47b"),
    );
    assert!(same.proceed, "{}", same.line);
    let changed = answer_to(
        &s,
        &state,
        3600,
        &flagger_call("confirm-promotion", Some("1"), "6c9f1e2a3b"),
    );
    assert!(!changed.proceed);
    assert!(
        changed.line.contains("canary changed since approval"),
        "{}",
        changed.line
    );
}

#[test]
fn the_rollback_hook_proceeds_only_on_a_rollback_or_a_breach() {
    let state = bound();
    let call = flagger_call("rollback", None, "85d557f47b");
    let running = answer_to(&Scenario::approved(), &state, 100, &call);
    assert!(!running.proceed);
    assert!(running.line.starts_with("no rollback"), "{}", running.line);

    let rolled_back = Scenario::at_stage_1().run(
        &sam(),
        4000,
        rollgate_domain::rollout::RolloutCommand::Rollback {
            to_stage: None,
            reason: "errors".into(),
        },
    );
    let a = answer_to(&rolled_back, &state, 4100, &call);
    assert!(a.proceed, "{}", a.line);
    assert!(a.line.contains("rolled back"), "{}", a.line);

    // stage 1 pauses on a breach; resumed with the breach still on record
    let breached = Scenario::at_stage_1()
        .readings(vec![reading("error_rate", 0.09, 50, 3800)], 3800)
        .run(
            &sam(),
            3900,
            rollgate_domain::rollout::RolloutCommand::Resume,
        );
    let a = answer_to(&breached, &state, 4000, &call);
    assert!(a.proceed, "{}", a.line);
    assert!(a.line.contains("breached"), "{}", a.line);
}

#[test]
fn an_argo_poll_answers_a_stable_word() {
    let state = history(&[(
        gus(),
        0,
        bind_cmd(Target::ArgoRollout {
            namespace: "shop".into(),
            name: "checkout".into(),
        }),
    )])
    .0;
    let b = state.binding().unwrap();
    let s = Scenario::approved();
    let r = s.state.rollout().unwrap();
    let stage = Some(StageIndex::new(1));
    let words: Vec<_> = [100, 3600]
        .into_iter()
        .map(|secs| answer_poll(b, r, &s.policy, at(secs), stage).gate.result)
        .collect();
    assert_eq!(words, ["pending", "approved"]);
    let a = answer_poll(b, r, &s.policy, at(100), stage).answer;
    assert_eq!((a.tool, a.hook.as_deref()), (Tool::Argo, Some("analysis")));
    let aborted = s.run(
        &rita(),
        200,
        rollgate_domain::rollout::RolloutCommand::Abort { reason: "x".into() },
    );
    let g = answer_poll(
        b,
        aborted.state.rollout().unwrap(),
        &aborted.policy,
        at(300),
        stage,
    )
    .gate;
    assert_eq!(g.result, "rejected");
}
