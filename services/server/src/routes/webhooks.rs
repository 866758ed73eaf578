//! Webhooks (`/v1/webhooks`, stream `webhook-{uuid}`) over [`rollgate_delivery::service`]:
//! governance admins of a team register, pause, resume, rotate the secret of, redeliver and
//! remove them; every role of the team reads them (R11: 404 outside the caller's teams).
//! The signing secret is answered by the create and rotate answers only (`Cache-Control:
//! no-store`), never again. Without `--secrets-key-file` webhooks are off: 503.

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use rollgate_delivery::service::{AdminCommand, AdminError, RegisterRequest, WebhookAdmin};
use rollgate_domain::webhook::{WebhookError, WebhookId};
use rollgate_domain::{Actor, Team};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::http::caller::Caller;
use crate::http::extract::Write;
use crate::http::observe::RequestId;
use crate::http::problem::{Problem, ProblemType};
use crate::http::query::Query;
use crate::state::AppState;

type Answer = Result<HttpResponse, Problem>;

fn admin(state: &AppState) -> Result<&WebhookAdmin, Problem> {
    state.integrations.webhooks.as_ref().ok_or_else(|| {
        Problem::unavailable(
            "webhooks are off on this server (no --secrets-key-file configured)",
            60,
        )
    })
}

fn not_found() -> Problem {
    Problem::not_found("webhook not found").with_rule("R11")
}

/// Maps a refusal of the webhook admin to its problem answer.
pub fn problem(e: AdminError) -> Problem {
    match e {
        AdminError::Url(why) => Problem::invalid_field("url", why.to_string()),
        AdminError::Webhook(WebhookError::NotFound) => not_found(),
        AdminError::Webhook(WebhookError::Refused(e)) => e.into(),
        AdminError::Conflict => Problem::new(
            ProblemType::StateConflict,
            "the webhook changed concurrently or already exists (a reused Idempotency-Key); its secret is not shown again",
        ),
        AdminError::Store(e) => e.into(),
        AdminError::Db(e) => {
            tracing::error!(error = %e, "webhook bookkeeping failed");
            Problem::internal()
        }
    }
}

/// The R12 envelope of a webhook event written for this request.
pub fn metadata(req: &HttpRequest, actor: &Actor, team: Option<&str>) -> Value {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let correlation = req
        .headers()
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| request_id.clone());
    json!({
        "actor": { "id": actor.id.as_str(), "roles": actor.roles },
        "team": team,
        "request_id": request_id,
        "correlation_id": correlation,
        "causation_id": null,
        "policy_version": null,
    })
}

fn parse_id(raw: &str) -> Result<WebhookId, Problem> {
    WebhookId::parse(raw).map_err(|_| not_found())
}

/// `POST /v1/webhooks` `{"team","url","event_types":[...],"description"?}`: 201 with the secret.
pub async fn create(w: Write) -> Answer {
    let admin = admin(&w.state)?;
    let body: RegisterRequest = w.body()?;
    let id = WebhookId::new(w.new_id("webhook"));
    let md = metadata(&w.req, &w.caller.actor, Some(&body.team));
    let created = admin
        .register(&w.caller.actor, w.state.clock.now(), id, body, md)
        .await
        .map_err(problem)?;
    let mut view = serde_json::to_value(&created).map_err(|_| Problem::internal())?;
    view["position"] = json!(created.outcome.last_position);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/webhooks/{id}")))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    team: Option<String>,
}

/// `GET /v1/webhooks[?team=T]`: the caller's teams' webhooks.
pub async fn list(state: web::Data<AppState>, caller: Caller, q: Query<ListQuery>) -> Answer {
    let admin = admin(&state)?;
    let team = match &q.team {
        Some(t) => Some(Team::parse(t).map_err(|e| Problem::invalid_field("team", e.to_string()))?),
        None => None,
    };
    let items = admin
        .list(&caller.actor, team.as_ref())
        .await
        .map_err(problem)?;
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": null })))
}

/// `GET /v1/webhooks/{id}`.
pub async fn get(state: web::Data<AppState>, caller: Caller, path: web::Path<String>) -> Answer {
    let admin = admin(&state)?;
    let view = admin
        .get(&caller.actor, parse_id(&path)?)
        .await
        .map_err(problem)?;
    Ok(HttpResponse::Ok().json(view))
}

/// Runs a management command on the path's webhook (R11 first: an invisible one is 404).
async fn command(w: &Write, command: AdminCommand) -> Answer {
    let admin = admin(&w.state)?;
    let id = parse_id(w.path("id"))?;
    let current = admin.get(&w.caller.actor, id).await.map_err(problem)?;
    let md = metadata(&w.req, &w.caller.actor, Some(&current.team));
    let (view, outcome) = admin
        .command(&w.caller.actor, w.state.clock.now(), id, command, md)
        .await
        .map_err(problem)?;
    let mut body = serde_json::to_value(&view).map_err(|_| Problem::internal())?;
    body["position"] = json!(outcome.last_position);
    Ok(HttpResponse::Ok().json(body))
}

/// `DELETE /v1/webhooks/{id}`.
pub async fn remove(w: Write) -> Answer {
    w.no_input()?;
    command(&w, AdminCommand::Remove).await
}

/// `POST /v1/webhooks/{id}/pause`.
pub async fn pause(w: Write) -> Answer {
    w.no_input()?;
    command(&w, AdminCommand::Pause).await
}

/// `POST /v1/webhooks/{id}/resume`.
pub async fn resume(w: Write) -> Answer {
    w.no_input()?;
    command(&w, AdminCommand::Resume).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeliverBody {
    /// Events after this log position are delivered again.
    after_position: u64,
}

/// `POST /v1/webhooks/{id}/redeliver` `{"after_position"}`.
pub async fn redeliver(w: Write) -> Answer {
    let RedeliverBody { after_position } = w.body()?;
    command(&w, AdminCommand::Redeliver { after_position }).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// How long the previous secret keeps signing (default a day).
    overlap_seconds: Option<i64>,
}

/// `POST /v1/webhooks/{id}/rotate-secret` `{"overlap_seconds"?}`: the new secret, once.
pub async fn rotate_secret(w: Write) -> Answer {
    let body: RotateBody = if w.raw.is_empty() {
        RotateBody::default()
    } else {
        w.body()?
    };
    let admin = admin(&w.state)?;
    let id = parse_id(w.path("id"))?;
    let current = admin.get(&w.caller.actor, id).await.map_err(problem)?;
    let md = metadata(&w.req, &w.caller.actor, Some(&current.team));
    let rotated = admin
        .rotate(
            &w.caller.actor,
            w.state.clock.now(),
            id,
            body.overlap_seconds,
            md,
        )
        .await
        .map_err(problem)?;
    let mut view = serde_json::to_value(&rotated).map_err(|_| Problem::internal())?;
    view["position"] = json!(rotated.outcome.last_position);
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptsQuery {
    limit: Option<u32>,
}

/// `GET /v1/webhooks/{id}/attempts[?limit=N]`: the latest delivery attempts, newest first.
pub async fn attempts(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    q: Query<AttemptsQuery>,
) -> Answer {
    let admin = admin(&state)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(Problem::invalid_field("limit", "must be from 1 to 1000"));
    }
    let items: Vec<Value> = admin
        .attempts(&caller.actor, parse_id(&path)?, limit)
        .await
        .map_err(problem)?
        .into_iter()
        .map(|a| {
            json!({
                "position": a.position,
                "event_id": a.event_id,
                "attempt": a.attempt,
                "status": a.status,
                "error": a.error,
                "instance": a.owner,
                "attempted_at": chrono::DateTime::from_timestamp_millis(a.attempted_at_ms),
                "duration_ms": a.duration_ms,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": null })))
}
