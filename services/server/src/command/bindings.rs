//! Binding commands (stream `binding-{uuid}`): bind, rotate, revoke, and the gate answers
//! tools ask for. They are decided by the domain and appended through the [`Issuer`], so
//! their events carry the same R12 metadata as every other command's.
//!
//! Binding events always get fresh ids, even under an Idempotency-Key: a create or a
//! rotation run again must never answer a secret that was not stored, so a rerun meets the
//! stream it already changed and answers a conflict instead.

use rollgate_domain::binding::{
    decide_binding, evolve_binding, Binding, BindingCommand, BindingContext, BindingError,
    BindingEvent, BindingId, BindingState, BindingStatus, GateAnswer, Target,
};
use rollgate_domain::{Actor, ActorId, Role, TeamScope};
use rollgate_store::{read_whole_stream, ExpectedVersion};

use crate::command::execute::policy_snapshot;
use crate::command::{Ids, Issuer, RequestMeta, Written};
use crate::http::problem::Problem;
use crate::state::AppState;

/// What a stored binding command did: the state after it, and its events' place in the log
/// (`None` when the domain had nothing to record, such as a repeated answer between
/// heartbeats).
pub struct BindingWrite {
    pub after: BindingState,
    pub written: Option<Written>,
}

/// The refusals of a binding command as problems.
pub fn binding_problem(e: BindingError) -> Problem {
    match e {
        BindingError::NotFound => Problem::not_found("binding not found").with_rule("R11"),
        BindingError::Unauthenticated => {
            Problem::unauthenticated("invalid or missing binding secret")
        }
        BindingError::Refused(e) => e.into(),
    }
}

/// The binding folded from its stream, and the stream's version (0: no such binding).
pub async fn load_binding(state: &AppState, id: BindingId) -> Result<(BindingState, u64), Problem> {
    let recorded = read_whole_stream(&*state.store, &id.stream()).await?;
    let mut folded = BindingState::default();
    let mut version = 0;
    for e in &recorded {
        let event = BindingEvent::from_stored(&e.event_type, e.schema_version, e.payload.clone())
            .map_err(|err| {
            tracing::error!(error = %err, stream = %e.stream, "cannot decode a binding event");
            Problem::internal()
        })?;
        folded = evolve_binding(folded, &event);
        version = e.version;
    }
    Ok((folded, version))
}

/// Checks a tool's presented secret (constant time, active bindings only) before anything
/// is read about the rollout.
pub fn authentic(folded: &BindingState, presented: Option<&str>) -> Result<(), Problem> {
    let ok = folded.binding().is_some_and(|b| {
        b.status == BindingStatus::Active && presented.is_some_and(|s| b.secret_hash.matches(s))
    });
    if ok {
        Ok(())
    } else {
        Err(binding_problem(BindingError::Unauthenticated))
    }
}

impl Issuer<'_> {
    /// Decides `command` on binding `id`, folded as `current` at `version`, and appends its
    /// events at that version (a binding not created yet: on no stream). `None` when another
    /// write to the binding came first: nothing was stored.
    pub async fn binding(
        &self,
        id: BindingId,
        current: &BindingState,
        version: u64,
        command: BindingCommand,
    ) -> Result<Option<BindingWrite>, Problem> {
        let ctx = BindingContext {
            actor: self.actor.clone(),
            now: self.state.clock.now(),
        };
        let events = decide_binding(current, command, &ctx).map_err(binding_problem)?;
        let after = events.iter().fold(current.clone(), evolve_binding);
        let Some(team) = after.binding().map(|b| b.team.clone()) else {
            return Err(Problem::internal());
        };
        if events.is_empty() {
            return Ok(Some(BindingWrite {
                after,
                written: None,
            }));
        }
        let fresh = Issuer {
            ids: &Ids::Random,
            ..*self
        };
        let md = fresh.metadata(&team, policy_snapshot(self.state, &team).await?.version);
        let expected = if current.binding().is_some() {
            ExpectedVersion::Exact(version)
        } else {
            ExpectedVersion::NoStream
        };
        let stored = events
            .iter()
            .map(|e| (e.event_type(), e.schema_version(), e.payload()));
        let written = fresh
            .append(&id.stream(), expected, stored, &md, None)
            .await?;
        Ok(written.map(|w| BindingWrite {
            after,
            written: Some(w),
        }))
    }
}

/// The actor a tool acts as: `flagger:test/podinfo`, `argo:shop/checkout` (else
/// `binding:{id}`), with the `service` role in the binding's team.
fn tool_actor(b: &Binding) -> Actor {
    let name = match &b.target {
        Target::FlaggerCanary { namespace, name } | Target::ArgoRollout { namespace, name } => {
            format!("{}:{namespace}/{name}", b.target.tool().as_str())
        }
        Target::FlagKey { key } => format!("flagd:{key}"),
        Target::GithubEnvironment {
            repository,
            environment,
        } => format!("github:{repository}/{environment}"),
    };
    let id = ActorId::parse(&name)
        .unwrap_or_else(|_| ActorId::parse(&format!("binding:{}", b.id)).expect("valid id"));
    Actor::new(
        id,
        [Role::Service],
        TeamScope::Teams([b.team.clone()].into_iter().collect()),
    )
}

/// Records a tool's answer, as the binding's tool (the domain decides whether it is a
/// change or a heartbeat). A lost race only skips this record: the next poll records it.
pub async fn record_tool_answer(
    state: &AppState,
    meta: &RequestMeta,
    folded: &BindingState,
    version: u64,
    presented: Option<&str>,
    answer: GateAnswer,
) -> Result<(), Problem> {
    let b = folded.binding().ok_or_else(Problem::internal)?;
    let actor = tool_actor(b);
    let issuer = Issuer {
        state,
        actor: &actor,
        meta,
        ids: &Ids::Random,
    };
    let command = BindingCommand::RecordGateAnswer {
        presented_secret: presented.map(str::to_owned),
        answer,
    };
    issuer.binding(b.id, folded, version, command).await?;
    Ok(())
}
