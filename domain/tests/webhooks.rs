//! Webhook targets as given/when/then over events: who may register and manage them (the
//! team's governance admin; R10, R11), what is validated, and how the delivery engine's
//! findings (failing, recovered, disabled on 410) fold.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rollgate_domain::webhook::{
    cloudevent_type, decide_webhook, evolve_webhook, SealedSecret, WebhookCommand, WebhookContext,
    WebhookError, WebhookEvent, WebhookId, WebhookState, WebhookStatus, DELIVERABLE_EVENT_TYPES,
};
use rollgate_domain::{Actor, ActorId, DomainError, ErrorKind, Role, Rule, Team, TeamScope};
use uuid::Uuid;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

fn person(id: &str, roles: &[Role], teams: &[&str]) -> Actor {
    Actor::new(
        ActorId::parse(id).unwrap(),
        roles.iter().copied(),
        TeamScope::parse(teams.iter().copied()).unwrap(),
    )
}

fn gus() -> Actor {
    person("gus", &[Role::GovernanceAdmin], &["web"])
}
fn gail_of_api() -> Actor {
    person("gail", &[Role::GovernanceAdmin], &["api"])
}
fn rita() -> Actor {
    person("rita", &[Role::ReleaseManager], &["web"])
}
fn audrey() -> Actor {
    person("audrey", &[Role::Auditor], &["web"])
}
fn engine() -> Actor {
    person("rollgate-delivery", &[Role::Service], &["*"])
}

fn hook_id() -> WebhookId {
    WebhookId::new(Uuid::from_u128(7))
}

fn sealed(n: u8) -> SealedSecret {
    SealedSecret {
        alg: "A256GCM".into(),
        key_id: "k1".into(),
        nonce: format!("nonce{n}"),
        ciphertext: format!("ciphertext{n}"),
    }
}

fn types(ts: &[&str]) -> BTreeSet<String> {
    ts.iter().map(|s| (*s).to_owned()).collect()
}

fn register(url: &str) -> WebhookCommand {
    WebhookCommand::Register {
        webhook_id: hook_id(),
        team: Team::parse("web").unwrap(),
        url: url.into(),
        event_types: types(&["dev.rollgate.rollout.stage_advanced"]),
        description: Some("release channel bridge".into()),
        secret: sealed(1),
    }
}

/// given(events) when(command by actor at t) then ...
struct Case {
    state: WebhookState,
}

fn given(events: &[WebhookEvent]) -> Case {
    Case {
        state: events.iter().fold(WebhookState::default(), evolve_webhook),
    }
}

impl Case {
    fn when(
        &self,
        actor: Actor,
        secs: i64,
        cmd: WebhookCommand,
    ) -> Result<Vec<WebhookEvent>, WebhookError> {
        decide_webhook(
            &self.state,
            cmd,
            &WebhookContext {
                actor,
                now: t0() + Duration::seconds(secs),
            },
        )
    }
}

fn registered() -> Vec<WebhookEvent> {
    given(&[])
        .when(gus(), 0, register("https://hooks.example.com/rollgate"))
        .unwrap()
}

fn then_events(
    events: &[WebhookEvent],
    actor: Actor,
    secs: i64,
    cmd: WebhookCommand,
) -> (Vec<WebhookEvent>, WebhookState) {
    let case = given(events);
    let out = case.when(actor, secs, cmd).unwrap();
    let state = out.iter().fold(case.state.clone(), evolve_webhook);
    (out, state)
}

#[test]
fn a_governance_admin_registers_a_webhook_of_their_team() {
    let events = registered();
    assert_eq!(events.len(), 1);
    match &events[0] {
        WebhookEvent::WebhookRegistered {
            webhook_id,
            team,
            url,
            secret,
            registered_by,
            ..
        } => {
            assert_eq!(*webhook_id, hook_id());
            assert_eq!(team.as_str(), "web");
            assert_eq!(url, "https://hooks.example.com/rollgate");
            assert_eq!(*secret, sealed(1));
            assert_eq!(registered_by.as_str(), "gus");
        }
        other => panic!("unexpected {other:?}"),
    }
    let state = given(&events).state;
    let w = state.webhook().unwrap();
    assert_eq!(w.status, WebhookStatus::Active);
    assert!(w.subscribes_to("Advanced"));
    assert!(!w.subscribes_to("Paused"));
}

#[test]
fn only_governance_admins_register_permission_and_r10() {
    let err = given(&[])
        .when(rita(), 0, register("https://hooks.example.com/x"))
        .unwrap_err();
    assert_eq!(err.rule(), Some(Rule::Permission));
    assert_eq!(err.kind(), ErrorKind::Forbidden);
    let err = given(&[])
        .when(audrey(), 0, register("https://hooks.example.com/x"))
        .unwrap_err();
    assert_eq!(err.rule(), Some(Rule::R10));
}

#[test]
fn registering_for_another_team_is_refused_r11() {
    let err = given(&[])
        .when(gail_of_api(), 0, register("https://hooks.example.com/x"))
        .unwrap_err();
    assert_eq!(err.rule(), Some(Rule::R11));
    assert!(matches!(
        err,
        WebhookError::Refused(DomainError::TeamNotAllowed { .. })
    ));
}

#[test]
fn another_teams_webhook_is_not_found_r11() {
    let events = registered();
    for cmd in [
        WebhookCommand::Pause,
        WebhookCommand::Remove,
        WebhookCommand::Redeliver { after_position: 0 },
        WebhookCommand::RotateSecret {
            secret: sealed(2),
            overlap_seconds: 60,
        },
    ] {
        let err = given(&events).when(gail_of_api(), 5, cmd).unwrap_err();
        assert_eq!(err, WebhookError::NotFound);
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.rule(), Some(Rule::R11));
    }
}

#[test]
fn urls_must_be_http_or_https_without_credentials() {
    for bad in [
        "ftp://hooks.example.com/x",
        "file:///etc/passwd",
        "hooks.example.com/x",
        "https://",
        "https://user:pw@hooks.example.com/x",
        "https://hooks.example.com/a b",
    ] {
        let err = given(&[]).when(gus(), 0, register(bad)).unwrap_err();
        match err {
            WebhookError::Refused(DomainError::Validation(errors)) => {
                assert!(errors.has_field("url"), "{bad}: {errors}")
            }
            other => panic!("{bad}: unexpected {other:?}"),
        }
    }
    assert!(given(&[])
        .when(gus(), 0, register("http://127.0.0.1:8080/hook"))
        .is_ok());
}

#[test]
fn event_types_must_be_known_and_not_empty() {
    let mut cmd = register("https://hooks.example.com/x");
    if let WebhookCommand::Register { event_types, .. } = &mut cmd {
        *event_types = types(&["dev.rollgate.rollout.exploded"]);
    }
    let err = given(&[]).when(gus(), 0, cmd.clone()).unwrap_err();
    assert!(
        matches!(err, WebhookError::Refused(DomainError::Validation(ref e)) if e.has_field("event_types"))
    );
    if let WebhookCommand::Register { event_types, .. } = &mut cmd {
        event_types.clear();
    }
    assert!(given(&[]).when(gus(), 0, cmd).is_err());
    assert_eq!(
        cloudevent_type("Advanced"),
        Some("dev.rollgate.rollout.stage_advanced")
    );
    assert_eq!(cloudevent_type("WebhookRegistered"), None);
    let unique: BTreeSet<_> = DELIVERABLE_EVENT_TYPES.iter().map(|(_, c)| c).collect();
    assert_eq!(unique.len(), DELIVERABLE_EVENT_TYPES.len());
}

#[test]
fn a_webhook_id_is_registered_once() {
    let events = registered();
    let err = given(&events)
        .when(gus(), 1, register("https://hooks.example.com/y"))
        .unwrap_err();
    assert!(matches!(
        err,
        WebhookError::Refused(DomainError::DuplicateId(_))
    ));
}

#[test]
fn pause_and_resume() {
    let mut events = registered();
    let (out, state) = then_events(&events, gus(), 10, WebhookCommand::Pause);
    assert!(matches!(out[0], WebhookEvent::WebhookPaused { .. }));
    assert_eq!(state.webhook().unwrap().status, WebhookStatus::Paused);
    events.extend(out);
    let err = given(&events)
        .when(gus(), 11, WebhookCommand::Pause)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let (out, state) = then_events(&events, gus(), 12, WebhookCommand::Resume);
    assert!(matches!(out[0], WebhookEvent::WebhookResumed { .. }));
    assert_eq!(state.webhook().unwrap().status, WebhookStatus::Active);
    let err = given(&events)
        .when(rita(), 12, WebhookCommand::Resume)
        .unwrap_err();
    assert_eq!(err.rule(), Some(Rule::Permission));
}

#[test]
fn rotation_keeps_the_previous_secret_signing_for_the_overlap() {
    let events = registered();
    let (out, state) = then_events(
        &events,
        gus(),
        100,
        WebhookCommand::RotateSecret {
            secret: sealed(2),
            overlap_seconds: 3600,
        },
    );
    match &out[0] {
        WebhookEvent::WebhookSecretRotated {
            secret,
            previous_secret,
            previous_valid_until,
            ..
        } => {
            assert_eq!(*secret, sealed(2));
            assert_eq!(*previous_secret, sealed(1));
            assert_eq!(*previous_valid_until, t0() + Duration::seconds(3700));
        }
        other => panic!("unexpected {other:?}"),
    }
    let w = state.webhook().unwrap();
    let during = w.signing_secrets(t0() + Duration::seconds(200));
    assert_eq!(during, vec![&sealed(2), &sealed(1)]);
    let after = w.signing_secrets(t0() + Duration::seconds(3700));
    assert_eq!(after, vec![&sealed(2)]);
    let err = given(&events)
        .when(
            gus(),
            100,
            WebhookCommand::RotateSecret {
                secret: sealed(2),
                overlap_seconds: -1,
            },
        )
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Validation);
}

#[test]
fn a_removed_webhook_is_gone() {
    let mut events = registered();
    let (out, state) = then_events(&events, gus(), 10, WebhookCommand::Remove);
    assert_eq!(state.webhook().unwrap().status, WebhookStatus::Removed);
    events.extend(out);
    for cmd in [
        WebhookCommand::Resume,
        WebhookCommand::Remove,
        WebhookCommand::Redeliver { after_position: 3 },
    ] {
        assert_eq!(
            given(&events).when(gus(), 11, cmd).unwrap_err(),
            WebhookError::NotFound
        );
    }
    assert_eq!(
        given(&events)
            .when(
                engine(),
                11,
                WebhookCommand::Disable {
                    position: 4,
                    reason: "410 Gone".into()
                }
            )
            .unwrap_err(),
        WebhookError::NotFound
    );
}

#[test]
fn the_engine_marks_failing_once_then_recovered() {
    let mut events = registered();
    let fail = WebhookCommand::MarkFailing {
        position: 42,
        attempts: 8,
        last_error: "HTTP 500".into(),
    };
    let (out, state) = then_events(&events, engine(), 20, fail.clone());
    assert_eq!(out.len(), 1);
    let w = state.webhook().unwrap();
    assert!(w.health.failing);
    assert_eq!(w.health.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(w.health.position, Some(42));
    events.extend(out);
    // Already failing: nothing new to record.
    assert!(given(&events)
        .when(engine(), 21, fail.clone())
        .unwrap()
        .is_empty());
    let (out, state) = then_events(
        &events,
        engine(),
        30,
        WebhookCommand::MarkRecovered { position: 42 },
    );
    assert!(matches!(out[0], WebhookEvent::WebhookRecovered { .. }));
    assert!(!state.webhook().unwrap().health.failing);
    // Not failing: recovering records nothing.
    assert!(given(&registered())
        .when(engine(), 31, WebhookCommand::MarkRecovered { position: 1 })
        .unwrap()
        .is_empty());
    // People do not mark failing.
    assert_eq!(
        given(&registered())
            .when(gus(), 31, fail)
            .unwrap_err()
            .rule(),
        Some(Rule::Permission)
    );
}

#[test]
fn gone_disables_and_a_resume_enables_again() {
    let mut events = registered();
    let (out, state) = then_events(
        &events,
        engine(),
        20,
        WebhookCommand::Disable {
            position: 9,
            reason: "receiver answered 410 Gone".into(),
        },
    );
    let w = state.webhook().unwrap();
    assert_eq!(w.status, WebhookStatus::Disabled);
    assert_eq!(
        w.disabled_reason.as_deref(),
        Some("receiver answered 410 Gone")
    );
    events.extend(out);
    let (_, state) = then_events(&events, gus(), 30, WebhookCommand::Resume);
    assert_eq!(state.webhook().unwrap().status, WebhookStatus::Active);
}

#[test]
fn events_survive_storage_and_never_show_a_secret_in_summaries() {
    let mut events = registered();
    let case = given(&events);
    events.extend(
        case.when(
            gus(),
            5,
            WebhookCommand::RotateSecret {
                secret: sealed(2),
                overlap_seconds: 10,
            },
        )
        .unwrap(),
    );
    events.extend(
        given(&events)
            .when(
                engine(),
                6,
                WebhookCommand::MarkFailing {
                    position: 1,
                    attempts: 3,
                    last_error: "x".repeat(5000),
                },
            )
            .unwrap(),
    );
    for e in &events {
        let back =
            WebhookEvent::from_stored(e.event_type(), e.schema_version(), e.payload()).unwrap();
        assert_eq!(&back, e);
        assert!(!e.summary().contains("ciphertext"));
        assert_eq!(e.webhook_id(), hook_id());
    }
    match events.last().unwrap() {
        WebhookEvent::WebhookFailing { last_error, .. } => assert_eq!(last_error.len(), 1024),
        other => panic!("unexpected {other:?}"),
    }
    assert!(WebhookEvent::from_stored("Advanced", 1, serde_json::json!({})).is_err());
    assert!(WebhookEvent::from_stored("WebhookPaused", 2, serde_json::json!({})).is_err());
    assert_eq!(WebhookId::of_stream(&hook_id().stream()), Some(hook_id()));
    assert_eq!(WebhookId::of_stream("rollout-x"), None);
}
