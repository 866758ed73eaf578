//! The gate decision in the delivery path, for people and for Argo Rollouts.
//!
//! - `GET /v1/rollouts/{id}/gate[?stage=N]`: any role of the rollout's team (R11: 404).
//! - `GET /v1/integrations/argo/{bid}/gate[?stage=N]`: `Authorization: Bearer <secret>`;
//!   200 with `result` = `approved` | `pending` | `rejected` for every business answer.
//!
//! Bindings are administered in [`super::bindings`], Flagger's webhooks are answered in
//! [`super::flagger`] and the flagd flag file is served by [`super::flags`]. Tool answers
//! are recorded by [`crate::command::bindings`].

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use rollgate_domain::binding::{answer_poll, BindingError, BindingId};
use rollgate_domain::gate::{gate, Transition};
use rollgate_domain::rollout::Rollout;
use rollgate_domain::StageIndex;
use serde::Deserialize;

use crate::command::bindings::{authentic, binding_problem, load_binding, record_tool_answer};
use crate::command::execute::policy_snapshot;
use crate::http::caller::Caller;
use crate::http::extract::{meta_of, parse_rollout_id, visible_rollout};
use crate::http::problem::Problem;
use crate::http::query::Query;
use crate::state::AppState;

type Answer = Result<HttpResponse, Problem>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageQuery {
    stage: Option<u32>,
}

fn transition(r: &Rollout, stage: Option<u32>) -> Transition {
    stage.map_or_else(
        || Transition::next_for(r),
        |s| Transition::Advance {
            to_stage: StageIndex::new(s),
        },
    )
}

/// `GET /v1/rollouts/{id}/gate[?stage=N]`.
pub async fn rollout_gate(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: Query<StageQuery>,
) -> Answer {
    let id = parse_rollout_id(&path)?;
    let (current, _) = visible_rollout(&state, &caller, &id).await?;
    caller.require_some_role("read a gate")?;
    let r = current.rollout().ok_or_else(Problem::rollout_not_found)?;
    let policy = policy_snapshot(&state, &r.team).await?;
    let g = gate(r, &policy, state.clock.now(), transition(r, q.stage));
    Ok(HttpResponse::Ok().json(g))
}

/// The bearer secret of a tool's request.
fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// `GET /v1/integrations/argo/{bid}/gate[?stage=N]`.
pub async fn argo(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    q: Query<StageQuery>,
) -> Answer {
    let id = BindingId::parse(&path).map_err(|_| binding_problem(BindingError::Unauthenticated))?;
    let (folded, version) = load_binding(&state, id).await?;
    authentic(&folded, bearer(&req))?;
    let b = folded.binding().ok_or_else(Problem::internal)?;
    let (current, _) = state.cache.rollout(&*state.store, &b.rollout_id).await?;
    let r = current.rollout().ok_or_else(Problem::rollout_not_found)?;
    let policy = policy_snapshot(&state, &r.team).await?;
    let a = answer_poll(
        b,
        r,
        &policy,
        state.clock.now(),
        q.stage.map(StageIndex::new),
    );
    let meta = meta_of(&req);
    record_tool_answer(&state, &meta, &folded, version, bearer(&req), a.answer).await?;
    Ok(HttpResponse::Ok().json(a.gate))
}
