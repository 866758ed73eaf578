//! The Prometheus evaluator inside `rollgate serve`: it finds running rollouts in the read
//! model, reads their state through the state cache, and records each interval's evaluation
//! through the one command path as the system actor, so a breach rolls back or pauses exactly
//! like posted readings. The loop, the schedule and the lease live in `rollgate-prometheus`.

use std::sync::Arc;

use actix_web::web;
use async_trait::async_trait;
use rollgate_domain::{Actor, ActorId, RolloutId};
use rollgate_prometheus::{
    ActiveStage, Evaluator, EvaluatorConfig, EvaluatorHandle, EvaluatorMetrics, Leases, PortError,
    Prometheus, Recorded, RolloutPort, StageEvaluation,
};

use crate::command::execute::{Issuer, RequestMeta};
use crate::command::ids::Ids;
use crate::state::AppState;

/// The actor id of rollgate's own evaluator in recorded events.
pub const EVALUATOR_ACTOR: &str = "rollgate-evaluator";

struct ServerPort {
    state: web::Data<AppState>,
    actor: Actor,
}

fn port_error(p: crate::http::problem::Problem) -> PortError {
    PortError(format!("{} ({})", p.detail, p.status))
}

#[async_trait]
impl RolloutPort for ServerPort {
    async fn candidates(&self) -> Result<Vec<RolloutId>, PortError> {
        rollgate_prometheus::running_rollouts(&self.state.store.pool()).await
    }

    async fn active_stage(&self, id: &RolloutId) -> Result<Option<ActiveStage>, PortError> {
        let (state, _) = self
            .state
            .cache
            .rollout(&*self.state.store, id)
            .await
            .map_err(port_error)?;
        Ok(state
            .rollout()
            .and_then(rollgate_prometheus::domain::active_stage))
    }

    async fn record(
        &self,
        id: &RolloutId,
        evaluation: StageEvaluation,
    ) -> Result<Recorded, PortError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let meta = RequestMeta {
            request_id: request_id.clone(),
            client_request_id: None,
            correlation_id: request_id,
            causation_id: None,
        };
        // One set of event ids per (rollout, stage entry, interval): two instances recording
        // the same interval write it once (the store recognises the ids).
        let ids = Ids::derived(
            EVALUATOR_ACTOR,
            &format!(
                "{id}/{}/{}/{}",
                evaluation.stage,
                evaluation.interval_index,
                evaluation.scheduled_at.timestamp_millis()
            ),
            "evaluation",
        );
        let issuer = Issuer {
            state: &self.state,
            actor: &self.actor,
            meta: &meta,
            ids: &ids,
        };
        let command = rollgate_prometheus::domain::record_command(&evaluation);
        match issuer.rollout(id, None, command).await {
            Ok(_) => Ok(Recorded::Recorded),
            // The domain refuses an interval its stage already holds (another instance, or
            // this one before a restart, recorded it); otherwise the rollout left the running
            // state (or the stage) since it was read.
            Err(p) if p.status == 409 => {
                let done = self.active_stage(id).await?.is_some_and(|s| {
                    s.stage == evaluation.stage
                        && s.entered_at < evaluation.scheduled_at
                        && s.last_interval
                            .is_some_and(|k| k >= evaluation.interval_index)
                });
                Ok(if done {
                    Recorded::AlreadyEvaluated
                } else {
                    Recorded::NotActive
                })
            }
            Err(p) => Err(port_error(p)),
        }
    }
}

/// Starts the evaluator loop for this instance, its metrics on `/metrics`.
pub fn spawn(state: web::Data<AppState>, client: Prometheus) -> anyhow::Result<EvaluatorHandle> {
    let metrics = EvaluatorMetrics::new();
    metrics.register(state.metrics.registry())?;
    let config = EvaluatorConfig::default();
    let instance = format!("instance-{}", uuid::Uuid::new_v4());
    let leases = Leases::new(state.store.pool(), instance, config.lease_ttl);
    let clock = state.clock.clone();
    let port = ServerPort {
        actor: Actor::system(ActorId::parse(EVALUATOR_ACTOR)?),
        state,
    };
    let evaluator = Evaluator::new(client, Arc::new(port), leases, clock, metrics, config);
    Ok(evaluator.spawn())
}

/// Refuses a plan whose queries are invalid (422 naming each field), or answers 503 when a
/// configured Prometheus cannot be asked: a plan is never accepted with unchecked queries.
/// Without a Prometheus, the templates are still checked.
pub async fn check_queries(
    state: &AppState,
    plan: &rollgate_domain::Plan,
    feature_key: &str,
) -> Result<(), crate::http::problem::Problem> {
    use crate::http::problem::Problem;
    let invalid =
        rollgate_prometheus::domain::validate_plan(state.prometheus.as_ref(), plan, feature_key)
            .await
            .map_err(|e| {
                Problem::unavailable(format!("cannot validate the plan's queries: {e}"), 5)
            })?;
    if invalid.is_empty() {
        return Ok(());
    }
    let mut errors = rollgate_domain::ValidationErrors::default();
    for i in invalid {
        errors.push(i.field, i.message);
    }
    Err(Problem::invalid(errors))
}
