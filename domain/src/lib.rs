//! The rollout governance decider: commands, events, state and rules R1–R12.
//!
//! Pure by construction: no I/O, no clock reads (time arrives in
//! [`Context::now`]), no randomness (ids arrive in commands). Each stream has
//! a decider: `decide(&State, Command, &Context) -> Result<Vec<Event>, DomainError>`
//! and `evolve(State, &Event) -> State`.
//!
//! - [`values`]: validated value types (ids, slugs, roles, actors).
//! - [`plan`]: the client plan shape and the validated [`Plan`].
//! - [`guardrail`]: criterion evaluation (pass / fail / inconclusive).
//! - [`context`]: actor, time and the policy snapshot a decision is taken under.
//! - [`policy`]: the per-team policy stream (versions, freeze windows).
//! - [`rollout`]: the rollout stream's commands, events, state and rules.
//! - [`error`]: refusals, each naming its rule and error kind.

pub mod binding;
pub mod context;
pub mod error;
pub mod flagd;
pub mod gate;
pub mod guardrail;
pub mod plan;
pub mod policy;
pub mod rollout;
mod stored;
pub mod values;
pub mod webhook;

pub use context::{Context, FreezeWindow, PolicySnapshot, DEFAULT_APPROVAL_VALIDITY_SECONDS};
pub use error::{
    DomainError, ErrorKind, Rule, UnmetPrecondition, ValidationError, ValidationErrors,
};
pub use guardrail::{evaluate, CriterionKind, Evaluation, Reading, Verdict};
pub use plan::{Plan, PlanSpec, Stage};
pub use policy::{
    decide_policy, evolve_policy, PolicyCommand, PolicyContext, PolicyEvent, PolicyState,
};
pub use rollout::{
    decide, evolve, CreateRolloutSpec, NoteAudience, RolloutCommand, RolloutEvent, RolloutState,
    RolloutStatus,
};
pub use stored::DecodeError;
pub use values::{
    Actor, ActorId, AnnotationId, Comparator, DecisionId, DeviationId, FeatureKey, FreezeId,
    MetricName, Percentage, ReadinessKey, RequestId, Role, RolloutId, StageIndex, Team, TeamScope,
    Threshold,
};
