//! `POST /v1/integrations/flagger`: Flagger's webhook body, the binding secret in
//! `metadata.secret`. 200 proceed, 403 with one line to wait, 401 (nothing recorded) for a
//! wrong or missing secret. The answer is recorded in the binding's stream by
//! [`crate::command::bindings`].

use actix_web::{web, HttpRequest, HttpResponse};
use rollgate_domain::binding::{answer_flagger, flagger_target_matches, BindingError, FlaggerCall};
use serde_json::json;

use crate::command::bindings::{authentic, binding_problem, load_binding, record_tool_answer};
use crate::command::execute::policy_snapshot;
use crate::http::body;
use crate::http::extract::meta_of;
use crate::http::problem::Problem;
use crate::state::AppState;

/// `POST /v1/integrations/flagger`.
pub async fn flagger(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, Problem> {
    let raw = body::read_limited(&req, &mut payload.into_inner()).await?;
    let call: FlaggerCall = body::json(&req, &raw)?;
    let ask = call.ask().map_err(Problem::invalid)?;
    let (folded, version) = load_binding(&state, ask.binding_id).await?;
    authentic(&folded, call.secret())?;
    let b = folded
        .binding()
        .ok_or_else(|| binding_problem(BindingError::Unauthenticated))?;
    if !flagger_target_matches(b, &call, &ask) {
        return Err(Problem::forbidden(format!(
            "binding {} is not bound to canary {}/{}",
            b.id, call.namespace, call.name
        ))
        .with_rule("permission"));
    }
    let (current, _) = state.cache.rollout(&*state.store, &b.rollout_id).await?;
    let r = current.rollout().ok_or_else(Problem::rollout_not_found)?;
    let policy = policy_snapshot(&state, &r.team).await?;
    let a = answer_flagger(b, r, &policy, state.clock.now(), &call, &ask);
    let meta = meta_of(&req);
    record_tool_answer(&state, &meta, &folded, version, call.secret(), a.answer).await?;
    if a.proceed {
        Ok(HttpResponse::Ok().json(json!({
            "proceed": true,
            "message": a.line,
            "gate": a.gate,
        })))
    } else {
        // Flagger shows the body in the canary's events: a one-line `detail`.
        Err(Problem::forbidden(a.line))
    }
}
