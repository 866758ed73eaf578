//! Bindings of external objects to rollouts (stream `binding-{uuid}`).
//!
//! - `POST /v1/bindings`, `GET /v1/bindings/{bid}`, `POST /v1/bindings/{bid}/rotate-secret`,
//!   `POST /v1/bindings/{bid}/revoke`, `GET /v1/bindings/{bid}/answers`: governance admins
//!   of the team (reads: any role of the team). Secrets are answered once, never stored in
//!   plain text, never logged; an Idempotency-Key derives the binding id, so a retried
//!   create answers 409 instead of a second secret.
//!
//! The commands are decided and appended by [`crate::command::bindings`].

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use rollgate_domain::binding::{
    Binding, BindingCommand, BindingEvent, BindingId, BindingState, SecretHash, Target,
};
use rollgate_domain::RolloutId;
use rollgate_store::read_whole_stream;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::command::bindings::{load_binding, BindingWrite};
use crate::http::caller::Caller;
use crate::http::extract::{visible_rollout, Write};
use crate::http::problem::{Problem, ProblemType};
use crate::state::AppState;

type Answer = Result<HttpResponse, Problem>;

/// A fresh secret: 32 bytes from the OS generator (two v4 UUIDs carry 244 random bits),
/// hex, with a recognisable prefix.
fn new_secret() -> String {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(Uuid::new_v4().as_bytes());
    format!("rgb_{}", hex::encode(bytes))
}

/// The binding named by the path, if the caller may see its team (R11: 404 otherwise).
async fn visible_binding(
    state: &AppState,
    caller: &Caller,
    raw: &str,
) -> Result<(BindingId, BindingState, u64), Problem> {
    let not_found = || Problem::not_found("binding not found").with_rule("R11");
    let id = BindingId::parse(raw).map_err(|_| not_found())?;
    let (folded, version) = load_binding(state, id).await?;
    match folded.binding() {
        Some(b) if caller.may_see(&b.team) => Ok((id, folded, version)),
        _ => Err(not_found()),
    }
}

/// What a binding shows (never the secret or its hash).
fn binding_view(b: &Binding) -> Value {
    json!({
        "binding_id": b.id.to_string(),
        "team": b.team.as_str(),
        "rollout_id": b.rollout_id.to_string(),
        "target": b.target,
        "tool": b.target.tool().as_str(),
        "status": b.status,
        "secret_version": b.secret_version,
        "created_by": b.created_by.as_str(),
        "created_at": b.created_at,
        "last_answer": b.last_answer.as_ref().map(|(a, at)| json!({
            "at": at,
            "verdict": a.verdict,
            "hook": a.hook,
            "summary": a.summary,
            "checksum": a.checksum,
        })),
        "version": b.version,
    })
}

/// The view of a binding after a command: its log position, and a new secret (shown once).
fn written_view(
    after: &BindingState,
    position: u64,
    secret: Option<&str>,
) -> Result<Value, Problem> {
    let mut view = binding_view(after.binding().ok_or_else(Problem::internal)?);
    if let Some(secret) = secret {
        view["secret"] = json!(secret);
    }
    view["position"] = json!(position);
    Ok(view)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBindingBody {
    rollout_id: String,
    target: Target,
}

/// `POST /v1/bindings` `{"rollout_id", "target": {...}}`: 201 with the secret, once.
pub async fn create_binding(w: Write) -> Answer {
    let body: CreateBindingBody = w.body()?;
    let rollout_id = RolloutId::parse(&body.rollout_id)
        .map_err(|_| Problem::invalid_field("rollout_id", "must be a UUID"))?;
    let (current, _) = visible_rollout(&w.state, &w.caller, &rollout_id).await?;
    let team = current
        .rollout()
        .map(|r| r.team.clone())
        .ok_or_else(Problem::rollout_not_found)?;
    let binding_id = BindingId::new(w.new_id("binding"));
    let secret = new_secret();
    let command = BindingCommand::Bind {
        binding_id,
        team,
        rollout_id,
        target: body.target,
        secret_hash: SecretHash::of(&secret),
    };
    let written = w
        .issuer()
        .binding(binding_id, &BindingState::default(), 0, command)
        .await?;
    let Some(BindingWrite { after, written }) = written else {
        return Err(Problem::new(
            ProblemType::StateConflict,
            format!("binding {binding_id} already exists (this Idempotency-Key was used); its secret is not shown again"),
        ));
    };
    let position = written.map_or(0, |w| w.last_position);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/bindings/{binding_id}")))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(written_view(&after, position, Some(&secret))?))
}

/// `GET /v1/bindings/{bid}`.
pub async fn get_binding(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Answer {
    let (_, folded, _) = visible_binding(&state, &caller, &path).await?;
    let b = folded.binding().ok_or_else(Problem::internal)?;
    Ok(HttpResponse::Ok().json(binding_view(b)))
}

/// Runs an admin command on the path's binding: the state after it and its log position.
/// A lost race answers 409.
async fn admin(w: &Write, command: BindingCommand) -> Result<(BindingState, u64), Problem> {
    let (id, folded, version) = visible_binding(&w.state, &w.caller, w.path("bid")).await?;
    match w.issuer().binding(id, &folded, version, command).await? {
        Some(BindingWrite { after, written }) => {
            Ok((after, written.map_or(0, |w| w.last_position)))
        }
        None => {
            let (_, current) = load_binding(&w.state, id).await?;
            Err(Problem::new(
                ProblemType::VersionConflict,
                "the binding changed while this request was decided; retry",
            )
            .with_current_version(current))
        }
    }
}

/// `POST /v1/bindings/{bid}/rotate-secret`: the new secret, once.
pub async fn rotate_secret(w: Write) -> Answer {
    w.no_input()?;
    let secret = new_secret();
    let command = BindingCommand::RotateSecret {
        secret_hash: SecretHash::of(&secret),
    };
    let (after, position) = admin(&w, command).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(written_view(&after, position, Some(&secret))?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    reason: String,
}

/// `POST /v1/bindings/{bid}/revoke` `{"reason"}`.
pub async fn revoke(w: Write) -> Answer {
    let RevokeBody { reason } = w.body()?;
    let (after, position) = admin(&w, BindingCommand::Revoke { reason }).await?;
    Ok(HttpResponse::Ok().json(written_view(&after, position, None)?))
}

/// `GET /v1/bindings/{bid}/answers`: the recorded gate answers, oldest first.
pub async fn answers(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Answer {
    let (id, _, _) = visible_binding(&state, &caller, &path).await?;
    let recorded = read_whole_stream(&*state.store, &id.stream()).await?;
    let mut items = Vec::new();
    for e in &recorded {
        let Ok(event) =
            BindingEvent::from_stored(&e.event_type, e.schema_version, e.payload.clone())
        else {
            continue;
        };
        if let BindingEvent::GateAnswered { .. } = &event {
            items.push(json!({
                "position": e.position,
                "recorded_at": e.recorded_at,
                "summary": event.summary(),
                "event": e.payload,
            }));
        }
    }
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": null })))
}
