//! The read side answered from the read models: rollout lists, the approver inbox, the
//! decision log and the audit trail.
//!
//! Every list accepts `min_position` (read-your-writes, see [`crate::http::consistency`]).
//! Team scope (R11) is applied in every query: lists only hold the caller's teams' rows
//! (`*` = all). The audit trail and the decision log are readable by every authenticated
//! caller within their teams: auditors need them, and the people who act on a rollout are
//! entitled to see who decided what on it. Nothing here writes, so R10 never refuses a read.

use actix_web::{web, HttpResponse};
use rollgate_projections::{
    AuditFilter, DecisionFilter, InboxQuery, ProjectionError, RolloutFilter, TeamScope,
};
use serde::Deserialize;

use crate::http::caller::Caller;
use crate::http::consistency::wait_for_projection;
use crate::http::problem::Problem;
use crate::http::query::{
    self, Count, Id, Kind, Limit, PageQuery, Query, Status, TeamName, Text, Time,
};
use crate::state::AppState;

type Answer = Result<HttpResponse, Problem>;

/// Maps a read-model failure (see `impl From<ProjectionError> for Problem`).
fn projection_problem(e: ProjectionError) -> Problem {
    e.into()
}

fn teams(caller: &Caller) -> TeamScope {
    caller.actor.teams.clone()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutsQuery {
    team: Option<TeamName>,
    status: Option<Status>,
    feature_key: Option<Text>,
    stage: Option<Count>,
    cursor: Option<String>,
    limit: Option<Limit>,
    min_position: Option<Count>,
}

/// `GET /v1/rollouts`: rollout summaries of the caller's teams, oldest first.
pub async fn list_rollouts(
    state: web::Data<AppState>,
    caller: Caller,
    q: Query<RolloutsQuery>,
) -> Answer {
    let q = q.0;
    let mut filter = RolloutFilter::new(teams(&caller));
    filter.team = q.team.map(|t| t.0);
    filter.status = q.status.map(|s| s.0);
    filter.feature_key = q.feature_key.map(|t| t.0);
    filter.stage = q
        .stage
        .map(|s| u32::try_from(s.0))
        .transpose()
        .map_err(|_| Problem::invalid_field("stage", "must be an integer of at least 0"))?;
    wait_for_projection(&state, q.min_position.as_ref()).await?;
    let pool = state.store.pool();
    let page = rollgate_projections::list_rollouts(
        &pool,
        &filter,
        q.cursor.as_deref(),
        query::limit(&q.limit),
    )
    .await
    .map_err(projection_problem)?;
    Ok(HttpResponse::Ok().json(page))
}

/// `GET /v1/approvals/inbox`: open advance requests the caller may decide.
pub async fn inbox(state: web::Data<AppState>, caller: Caller, q: Query<PageQuery>) -> Answer {
    wait_for_projection(&state, q.min_position.as_ref()).await?;
    let who = InboxQuery {
        actor_id: caller.sub().to_owned(),
        roles: caller.actor.roles.clone(),
        teams: teams(&caller),
    };
    let pool = state.store.pool();
    let page =
        rollgate_projections::inbox(&pool, &who, q.cursor.as_deref(), query::limit(&q.limit))
            .await
            .map_err(projection_problem)?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionsQuery {
    team: Option<TeamName>,
    rollout_id: Option<Id>,
    kind: Option<Kind>,
    actor: Option<Text>,
    from: Option<Time>,
    to: Option<Time>,
    cursor: Option<String>,
    limit: Option<Limit>,
    min_position: Option<Count>,
}

/// `GET /v1/decisions`: the decision log of the caller's teams, oldest first.
pub async fn decisions(
    state: web::Data<AppState>,
    caller: Caller,
    q: Query<DecisionsQuery>,
) -> Answer {
    let q = q.0;
    let mut filter = DecisionFilter::new(teams(&caller));
    filter.team = q.team.map(|t| t.0);
    filter.rollout_id = q.rollout_id.map(|i| i.0);
    filter.kind = q.kind.map(|k| k.0);
    filter.actor = q.actor.map(|a| a.0);
    filter.from = q.from.map(|t| t.0);
    filter.to = q.to.map(|t| t.0);
    wait_for_projection(&state, q.min_position.as_ref()).await?;
    let (cursor, limit) = (q.cursor.as_deref(), query::limit(&q.limit));
    let page = rollgate_projections::decisions(&state.store.pool(), &filter, cursor, limit)
        .await
        .map_err(projection_problem)?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<Text>,
    team: Option<TeamName>,
    rollout_id: Option<Id>,
    event_type: Option<Text>,
    from: Option<Time>,
    to: Option<Time>,
    cursor: Option<String>,
    limit: Option<Limit>,
    min_position: Option<Count>,
}

/// `GET /v1/audit`: one entry per event of the caller's teams, in log order.
pub async fn audit(state: web::Data<AppState>, caller: Caller, q: Query<AuditQuery>) -> Answer {
    let q = q.0;
    let mut filter = AuditFilter::new(teams(&caller));
    filter.actor = q.actor.map(|a| a.0);
    filter.team = q.team.map(|t| t.0);
    filter.rollout_id = q.rollout_id.map(|i| i.0);
    filter.event_type = q.event_type.map(|t| t.0);
    filter.from = q.from.map(|t| t.0);
    filter.to = q.to.map(|t| t.0);
    wait_for_projection(&state, q.min_position.as_ref()).await?;
    let (cursor, limit) = (q.cursor.as_deref(), query::limit(&q.limit));
    let page = rollgate_projections::audit(&state.store.pool(), &filter, cursor, limit)
        .await
        .map_err(projection_problem)?;
    Ok(HttpResponse::Ok().json(page))
}
