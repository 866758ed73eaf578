//! The rollout stream: commands, events, state, `decide` and `evolve`.
//!
//! # Who may issue which command
//!
//! Every command first passes R11 (the actor's teams include the rollout's
//! team, else "rollout not found") and R10 (auditors and viewers never write).
//!
//! | command | roles | refusal when the role is missing |
//! |---|---|---|
//! | `Create`, `RevisePlan`, `Start`, `RequestAdvance`, `WithdrawRequest`, `Advance`, `Complete`, `Abort`, `AddNote` | release_manager | permission |
//! | `SignOffReadiness` | the item's `owner_role` | permission |
//! | `Approve`, `Reject` | a role named by the target stage's quorum rules | R1 |
//! | `RecordReadings` | service, sre | permission |
//! | `RecordEvaluation` | rollgate's own evaluator ([`crate::Actor::system`]) only | permission |
//! | `Pause`, `Resume` | release_manager, sre | permission |
//! | `Rollback` | release_manager, sre | R7 |
//! | `RequestDeviation` | release_manager, sre, approver | permission |
//! | `GrantDeviation`, `DenyDeviation` | the policy's `deviation_granter_roles` | R8 |
//! | `RecordDecision`, `Annotate` | release_manager, approver, sre, governance_admin | permission |
//!
//! # Lifecycle
//!
//! `draft → ready → running(k) ⇄ paused`, `rolled_back` and the terminal
//! `completed` / `aborted`.
//!
//! - A plan with an empty readiness checklist is ready at once: `Create` emits
//!   `RolloutCreated` and `RolloutReady` together.
//! - `Start` puts the rollout at stage 0 without approvals; the quorum rules of a
//!   stage govern *entering* it, so stage 0's rules apply when re-entering it
//!   from 0 % after a rollback.
//! - An advance request always asks for the next stage and is judged against
//!   that (target) stage's quorum rules, and the current stage's soak and criteria.
//! - A rollback leaves the rollout `rolled_back` at the target (exposure of the
//!   target stage, or 0 %) and closes any open request. `Resume` makes it
//!   `running` there; from 0 % the next request asks for stage 0.
//! - An automatic rollback (a breached rollback criterion on a stage with
//!   `on_breach: rollback`) goes to the previous stage (or 0 % from stage 0).
//!   With `on_breach: pause` a running rollout is paused.
//! - A plan revision keeps sign-offs of items that still exist; before start it
//!   returns the rollout to draft unless every item is still signed off.
//!
//! - `Approve` and `Reject` need a role named by the target stage's quorum
//!   rules (R1) and are refused to the requester (R2); the requester withdraws.
//! - `Advance` names an open request and checks (R4): the quorum over approvals
//!   that are still valid (R6: same plan revision, not expired), the current
//!   stage's soak since it was entered, its success criteria (latest reading per
//!   metric since entering the stage), no breached rollback criterion, and no
//!   active freeze (R9). Inconclusive success criteria pass only with a
//!   non-empty `inconclusive_override` rationale, recorded in `Advanced`.
//! - R9: an active freeze window also refuses `Start` and `Resume` (they raise
//!   exposure); `Pause` and `Rollback` are never frozen. A granted R9
//!   deviation waives a freeze for an advance only.
//! - Readings are accepted while running, paused or rolled back; they always
//!   belong to the current stage and are cleared whenever the stage changes.
//!   A reading's `observed_at` may be at most [`crate::guardrail::CLOCK_LEEWAY_SECONDS`]
//!   ahead of `now` and at most that much before the stage was entered (clock
//!   skew, whole-second times); which reading is
//!   latest is decided by when rollgate recorded it, never by `observed_at`.
//! - Decisions, notes and annotations are accepted in every state, terminal
//!   ones included (post-mortems happen after completion); nothing else is.
//!
//! # Deviations
//!
//! A deviation names rules among R4 (approvals, soak, criteria), R6 (stale or
//! expired approvals) and R9 (freeze). It applies only at the stage the
//! rollout was at when it was requested, until it expires, and only once: an
//! `Advance` that needs it records it in `deviations_used`.

mod command;
mod decide;
mod event;
pub mod quorum;
mod state;

pub use command::{CreateRolloutSpec, NoteAudience, RolloutCommand};
pub use decide::decide;
pub use event::{
    CountedApproval, RolloutEvent, READINGS_RECORDED_SCHEMA_VERSION, ROLLED_BACK_SCHEMA_VERSION,
    SCHEMA_VERSION,
};
pub use state::{
    evolve, AdvanceRequest, Approval, CriterionStatus, Deviation, DeviationStatus, LastObservation,
    RequestStatus, Rollout, RolloutState, RolloutStatus,
};
