//! Shared test support: actors, fixture plans, a clock, a scenario builder and
//! the given/when/then harness.
#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use rollgate_domain::plan::{Plan, PlanSpec};
use rollgate_domain::rollout::{decide, evolve, RolloutCommand, RolloutEvent, RolloutState};
use rollgate_domain::{
    Actor, ActorId, Context, DomainError, ErrorKind, MetricName, PolicySnapshot, Reading,
    RequestId, Role, RolloutId, Rule, Team, TeamScope,
};
use uuid::Uuid;

pub const TEST_PLAN: &str = include_str!("../fixtures/test-plan.json");
pub const EXAMPLE: &str = include_str!("../fixtures/create-rollout.json");

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(secs)
}

pub fn team() -> Team {
    Team::parse("web").unwrap()
}

pub fn actor(id: &str, roles: &[Role]) -> Actor {
    Actor::new(
        ActorId::parse(id).unwrap(),
        roles.iter().copied(),
        TeamScope::parse(["web"]).unwrap(),
    )
}

pub fn id(s: &str) -> ActorId {
    ActorId::parse(s).unwrap()
}

pub fn rita() -> Actor {
    actor("rita", &[Role::ReleaseManager])
}
pub fn ann() -> Actor {
    actor("ann", &[Role::Approver])
}
pub fn abe() -> Actor {
    actor("abe", &[Role::Approver])
}
pub fn sam() -> Actor {
    actor("sam", &[Role::Sre])
}
pub fn gus() -> Actor {
    actor("gus", &[Role::GovernanceAdmin])
}
pub fn gwen() -> Actor {
    actor("gwen", &[Role::GovernanceAdmin])
}
pub fn bot() -> Actor {
    actor("bot", &[Role::Service])
}
pub fn auditor() -> Actor {
    actor("aud", &[Role::Auditor])
}
pub fn viewer() -> Actor {
    actor("vic", &[Role::Viewer])
}
pub fn outsider() -> Actor {
    Actor::new(
        id("olga"),
        [Role::ReleaseManager, Role::Approver, Role::Sre],
        TeamScope::parse(["api"]).unwrap(),
    )
}

pub fn policy() -> PolicySnapshot {
    PolicySnapshot::default_for(&team())
}

pub fn ctx(actor: &Actor, secs: i64) -> Context {
    Context {
        actor: actor.clone(),
        now: at(secs),
        policy: policy(),
    }
}

pub fn ctx_with(actor: &Actor, secs: i64, policy: PolicySnapshot) -> Context {
    Context {
        actor: actor.clone(),
        now: at(secs),
        policy,
    }
}

pub fn plan_spec(json: &str) -> PlanSpec {
    serde_json::from_str(json).unwrap()
}

pub fn test_plan() -> Plan {
    Plan::parse(plan_spec(TEST_PLAN)).unwrap()
}

/// The test plan with `f` applied to its raw JSON first.
pub fn test_plan_with(f: impl FnOnce(&mut serde_json::Value)) -> Plan {
    let mut v: serde_json::Value = serde_json::from_str(TEST_PLAN).unwrap();
    f(&mut v);
    Plan::parse(serde_json::from_value(v).unwrap()).unwrap()
}

pub fn rollout_id() -> RolloutId {
    RolloutId::new(Uuid::from_u128(0xabc))
}

pub fn rid(n: u128) -> RequestId {
    RequestId::new(Uuid::from_u128(n))
}

pub fn reading(metric: &str, value: f64, samples: u64, secs: i64) -> Reading {
    Reading {
        metric: MetricName::parse(metric).unwrap(),
        value,
        samples,
        observed_at: at(secs),
    }
}

pub fn create_cmd(plan: Plan) -> RolloutCommand {
    RolloutCommand::Create {
        id: rollout_id(),
        feature_key: rollgate_domain::FeatureKey::parse("checkout-one-click").unwrap(),
        title: "One-click checkout".to_owned(),
        team: team(),
        plan,
    }
}

/// Builds a history by running commands through `decide` (panicking on refusal).
#[derive(Clone)]
pub struct Scenario {
    pub events: Vec<RolloutEvent>,
    pub state: RolloutState,
    pub policy: PolicySnapshot,
}

impl Default for Scenario {
    fn default() -> Self {
        Self::new()
    }
}

impl Scenario {
    pub fn new() -> Self {
        Self {
            events: Vec::new(),
            state: RolloutState::default(),
            policy: policy(),
        }
    }

    pub fn ctx(&self, who: &Actor, secs: i64) -> Context {
        ctx_with(who, secs, self.policy.clone())
    }

    pub fn run(mut self, who: &Actor, secs: i64, cmd: RolloutCommand) -> Self {
        let c = self.ctx(who, secs);
        let events = decide(&self.state, cmd.clone(), &c)
            .unwrap_or_else(|e| panic!("scenario step {cmd:?} refused: {e}"));
        for e in &events {
            self.state = evolve(self.state, e);
        }
        self.events.extend(events);
        self
    }

    pub fn try_run(
        &self,
        who: &Actor,
        secs: i64,
        cmd: RolloutCommand,
    ) -> Result<Vec<RolloutEvent>, DomainError> {
        decide(&self.state, cmd, &self.ctx(who, secs))
    }

    /// Draft with the test plan, created at t=0.
    pub fn created() -> Self {
        Self::new().run(&rita(), 0, create_cmd(test_plan()))
    }

    /// Both readiness items signed off at t=0.
    pub fn ready() -> Self {
        Self::created()
            .run(
                &rita(),
                0,
                RolloutCommand::SignOffReadiness {
                    item_key: "qa".into(),
                },
            )
            .run(
                &sam(),
                0,
                RolloutCommand::SignOffReadiness {
                    item_key: "runbook".into(),
                },
            )
    }

    /// Running at stage 0 since t=0.
    pub fn running() -> Self {
        Self::ready().run(&rita(), 0, RolloutCommand::Start)
    }

    /// Running at stage 0 with an open request `rid(1)` for stage 1 made by rita at t=10.
    pub fn requested() -> Self {
        Self::running().run(
            &rita(),
            10,
            RolloutCommand::RequestAdvance { request_id: rid(1) },
        )
    }

    /// `requested()` plus the stage-1 quorum (ann, abe, sam at t=20) and a good
    /// reading at t=30: every precondition but soak (3600 s) is met.
    pub fn approved() -> Self {
        Self::requested()
            .approve(&ann(), 1, 20)
            .approve(&abe(), 1, 20)
            .approve(&sam(), 1, 20)
            .readings(vec![reading("error_rate", 0.001, 500, 30)], 30)
    }

    /// Running at stage 1, entered at t=3600.
    pub fn at_stage_1() -> Self {
        Self::approved().run(
            &rita(),
            3600,
            RolloutCommand::Advance {
                request_id: rid(1),
                inconclusive_override: None,
            },
        )
    }

    pub fn approve(self, who: &Actor, request: u128, secs: i64) -> Self {
        self.run(
            who,
            secs,
            RolloutCommand::Approve {
                request_id: rid(request),
                comment: None,
            },
        )
    }

    pub fn readings(self, readings: Vec<Reading>, secs: i64) -> Self {
        self.run(&bot(), secs, RolloutCommand::RecordReadings { readings })
    }

    pub fn with_policy(mut self, policy: PolicySnapshot) -> Self {
        self.policy = policy;
        self
    }
}

// ---------------------------------------------------------------------------
// given / when / then
// ---------------------------------------------------------------------------

pub struct Given {
    state: RolloutState,
}

pub fn given(events: &[RolloutEvent]) -> Given {
    Given {
        state: RolloutState::from_events(events),
    }
}

impl Given {
    pub fn when(self, cmd: RolloutCommand, ctx: &Context) -> Then {
        let result = decide(&self.state, cmd, ctx);
        Then {
            state: self.state,
            result,
        }
    }
}

pub struct Then {
    pub state: RolloutState,
    pub result: Result<Vec<RolloutEvent>, DomainError>,
}

impl Then {
    /// Exactly these events.
    pub fn then(self, expected: &[RolloutEvent]) -> RolloutState {
        let events = self.events();
        assert_eq!(events, expected);
        events.iter().fold(self.state, evolve)
    }

    /// Accepted; returns the events.
    pub fn events(&self) -> Vec<RolloutEvent> {
        match &self.result {
            Ok(events) => events.clone(),
            Err(e) => panic!("expected events, got refusal: {e} ({e:?})"),
        }
    }

    /// Accepted; returns the event type names.
    pub fn then_types(&self, expected: &[&str]) -> Vec<RolloutEvent> {
        let events = self.events();
        let types: Vec<_> = events.iter().map(|e| e.event_type()).collect();
        assert_eq!(types, expected);
        events
    }

    /// Refused by `rule`; returns the error.
    pub fn then_error(self, rule: Rule) -> DomainError {
        match self.result {
            Ok(events) => panic!("expected refusal by {}, got events {events:?}", rule.id()),
            Err(e) => {
                assert_eq!(e.rule(), Some(rule), "wrong rule in: {e} ({e:?})");
                assert!(
                    rule == Rule::R11 || e.to_string().starts_with(rule.id()),
                    "message must start with the rule: {e}"
                );
                e
            }
        }
    }

    /// Refused with this kind (for lifecycle refusals that name no rule).
    pub fn then_error_kind(self, kind: ErrorKind) -> DomainError {
        match self.result {
            Ok(events) => panic!("expected a {kind:?} refusal, got events {events:?}"),
            Err(e) => {
                assert_eq!(e.kind(), kind, "wrong kind in: {e} ({e:?})");
                e
            }
        }
    }

    /// Refused with an error that `expected` accepts.
    pub fn then_refused(self, expected: impl FnOnce(&DomainError) -> bool) -> DomainError {
        match self.result {
            Ok(events) => panic!("expected a refusal, got events {events:?}"),
            Err(e) => {
                assert!(expected(&e), "unexpected refusal: {e} ({e:?})");
                e
            }
        }
    }

    /// Refused as invalid input at `field`.
    pub fn then_invalid(self, field: &str) -> DomainError {
        match self.result {
            Ok(events) => panic!("expected invalid {field}, got events {events:?}"),
            Err(DomainError::Validation(errors)) => {
                assert!(errors.has_field(field), "no error at {field}: {errors}");
                DomainError::Validation(errors)
            }
            Err(e) => panic!("expected invalid {field}, got {e} ({e:?})"),
        }
    }
}

/// The scenario's history as the "given".
pub fn given_scenario(s: &Scenario) -> Given {
    given(&s.events)
}
