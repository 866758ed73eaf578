//! Gates in the delivery path: the gate decision for people and tools, external bindings
//! (stream `binding-{uuid}`), Flagger's webhooks, Argo Rollouts' web metric and the flagd
//! flag file.
//!
//! - `GET /v1/rollouts/{id}/gate[?stage=N]`: any role of the rollout's team (R11: 404).
//! - `POST /v1/bindings`, `GET /v1/bindings/{bid}`, `POST /v1/bindings/{bid}/rotate-secret`,
//!   `POST /v1/bindings/{bid}/revoke`, `GET /v1/bindings/{bid}/answers`: governance admins
//!   of the team (reads: any role of the team). Secrets are answered once, never stored in
//!   plain text, never logged; an Idempotency-Key derives the binding id, so a retried
//!   create answers 409 instead of a second secret.
//! - `POST /v1/integrations/flagger`: Flagger's webhook body, the binding secret in
//!   `metadata.secret`. 200 proceed, 403 with one line to wait, 401 (nothing recorded) for a
//!   wrong or missing secret.
//! - `GET /v1/integrations/argo/{bid}/gate[?stage=N]`: `Authorization: Bearer <secret>`;
//!   200 with `result` = `approved` | `pending` | `rejected` for every business answer.
//! - `GET /v1/flags/flagd.json?team=T`: the team's flag file, `ETag` / `If-None-Match`.
//!
//! Tool answers are recorded as `GateAnswered` events in the binding's stream, rate-limited
//! by the domain (changes plus a heartbeat).

use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use rollgate_domain::binding::{
    answer_flagger, answer_poll, decide_binding, evolve_binding, flagger_target_matches,
    BindingCommand, BindingContext, BindingError, BindingEvent, BindingId, BindingState,
    FlaggerCall, SecretHash, Target,
};
use rollgate_domain::flagd::flag_file;
use rollgate_domain::gate::{gate, Transition};
use rollgate_domain::{
    Actor, ActorId, DomainError, PolicySnapshot, Role, RolloutId, RolloutState, StageIndex, Team,
    TeamScope,
};
use rollgate_store::{read_whole_stream, EventData, ExpectedVersion, StoreError};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::http::body;
use crate::http::caller::Caller;
use crate::http::extract::{parse_rollout_id, visible_rollout, Write};
use crate::http::observe::RequestId;
use crate::http::problem::{Problem, ProblemType};
use crate::http::query::Query;
use crate::state::AppState;

type Answer = Result<HttpResponse, Problem>;

/// Every role may read a gate, as long as it is a role this service knows.
fn require_some_role(caller: &Caller) -> Result<(), Problem> {
    if caller.actor.roles.is_empty() {
        return Err(DomainError::Permission {
            actor: caller.actor.id.clone(),
            action: "read a gate".to_owned(),
            needed: Role::ALL.to_vec(),
        }
        .into());
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageQuery {
    stage: Option<u32>,
}

fn transition(r: &rollgate_domain::rollout::Rollout, stage: Option<u32>) -> Transition {
    stage.map_or_else(
        || Transition::next_for(r),
        |s| Transition::Advance {
            to_stage: StageIndex::new(s),
        },
    )
}

async fn policy_of(state: &AppState, team: &Team) -> Result<PolicySnapshot, Problem> {
    Ok(state.cache.policy(&*state.store, team).await?.0.snapshot())
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
    require_some_role(&caller)?;
    let r = current.rollout().ok_or_else(Problem::rollout_not_found)?;
    let policy = policy_of(&state, &r.team).await?;
    let g = gate(r, &policy, state.clock.now(), transition(r, q.stage));
    Ok(HttpResponse::Ok().json(g))
}

// ---------------------------------------------------------------------------
// Bindings
// ---------------------------------------------------------------------------

fn binding_problem(e: BindingError) -> Problem {
    match e {
        BindingError::NotFound => Problem::not_found("binding not found").with_rule("R11"),
        BindingError::Unauthenticated => {
            Problem::unauthenticated("invalid or missing binding secret")
        }
        BindingError::Refused(e) => e.into(),
    }
}

/// A fresh secret: 32 bytes from the OS generator (two v4 UUIDs carry 244 random bits),
/// hex, with a recognisable prefix.
fn new_secret() -> String {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(Uuid::new_v4().as_bytes());
    bytes.extend_from_slice(Uuid::new_v4().as_bytes());
    format!("rgb_{}", hex::encode(bytes))
}

async fn load_binding(state: &AppState, id: BindingId) -> Result<(BindingState, u64), Problem> {
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

/// The request's id (set by the request middleware), for the events' metadata (R12).
fn request_id(req: &HttpRequest) -> String {
    req.extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| Uuid::new_v4().to_string())
}

fn metadata(actor: &Actor, team: &Team, request_id: &str) -> Value {
    json!({
        "actor": { "id": actor.id.as_str(), "roles": actor.roles },
        "team": team.as_str(),
        "request_id": request_id,
        "correlation_id": request_id,
        "causation_id": null,
    })
}

/// Appends decided binding events at `expected` (the stream of a binding is written here
/// only); a lost race answers 409.
async fn append(
    state: &AppState,
    req: &HttpRequest,
    id: BindingId,
    expected: ExpectedVersion,
    events: &[BindingEvent],
    actor: &Actor,
    team: &Team,
) -> Result<u64, Problem> {
    if events.is_empty() {
        return Ok(0);
    }
    let md = metadata(actor, team, &request_id(req));
    let data = events
        .iter()
        .map(|e| EventData {
            id: Uuid::new_v4(),
            event_type: e.event_type().to_owned(),
            schema_version: e.schema_version(),
            payload: e.payload(),
            metadata: md.clone(),
        })
        .collect();
    match state.store.append(&id.stream(), expected, data).await {
        Ok(o) => Ok(o.last_position),
        Err(StoreError::WrongExpectedVersion { current, .. }) => Err(Problem::new(
            ProblemType::VersionConflict,
            "the binding changed while this request was decided; retry",
        )
        .with_current_version(current)),
        Err(e) => Err(e.into()),
    }
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
fn binding_view(b: &rollgate_domain::binding::Binding) -> Value {
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
    let ctx = BindingContext {
        actor: w.caller.actor.clone(),
        now: w.state.clock.now(),
    };
    let command = BindingCommand::Bind {
        binding_id,
        team: team.clone(),
        rollout_id,
        target: body.target,
        secret_hash: SecretHash::of(&secret),
    };
    let events =
        decide_binding(&BindingState::default(), command, &ctx).map_err(binding_problem)?;
    let position = match append(
        &w.state,
        &w.req,
        binding_id,
        ExpectedVersion::NoStream,
        &events,
        &w.caller.actor,
        &team,
    )
    .await
    {
        Err(p) if p.status == 409 => {
            return Err(Problem::new(
                ProblemType::StateConflict,
                format!("binding {binding_id} already exists (this Idempotency-Key was used); its secret is not shown again"),
            ))
        }
        other => other?,
    };
    let folded = BindingState::from_events(&events);
    let mut view = binding_view(folded.binding().ok_or_else(Problem::internal)?);
    view["secret"] = json!(secret);
    view["position"] = json!(position);
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/v1/bindings/{binding_id}")))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view))
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

/// Runs an admin command on the path's binding.
async fn admin(w: &Write, command: BindingCommand) -> Result<(BindingState, u64), Problem> {
    let (id, folded, version) = visible_binding(&w.state, &w.caller, w.path("bid")).await?;
    let ctx = BindingContext {
        actor: w.caller.actor.clone(),
        now: w.state.clock.now(),
    };
    let events = decide_binding(&folded, command, &ctx).map_err(binding_problem)?;
    let team = folded
        .binding()
        .map(|b| b.team.clone())
        .ok_or_else(Problem::internal)?;
    let position = append(
        &w.state,
        &w.req,
        id,
        ExpectedVersion::Exact(version),
        &events,
        &w.caller.actor,
        &team,
    )
    .await?;
    let after = events.iter().fold(folded, evolve_binding);
    Ok((after, position))
}

/// `POST /v1/bindings/{bid}/rotate-secret`: the new secret, once.
pub async fn rotate_secret(w: Write) -> Answer {
    w.no_input()?;
    let secret = new_secret();
    let command = BindingCommand::RotateSecret {
        secret_hash: SecretHash::of(&secret),
    };
    let (after, position) = admin(&w, command).await?;
    let mut view = binding_view(after.binding().ok_or_else(Problem::internal)?);
    view["secret"] = json!(secret);
    view["position"] = json!(position);
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view))
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
    let mut view = binding_view(after.binding().ok_or_else(Problem::internal)?);
    view["position"] = json!(position);
    Ok(HttpResponse::Ok().json(view))
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

// ---------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------

/// The actor a tool acts as: `flagger:test/podinfo`, `argo:shop/checkout`.
fn tool_actor(b: &rollgate_domain::binding::Binding) -> Actor {
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

/// Records a tool's answer (the domain decides whether it is a change or a heartbeat).
/// A lost race only skips this record: the next poll records it.
async fn record(
    state: &AppState,
    req: &HttpRequest,
    id: BindingId,
    folded: &BindingState,
    version: u64,
    presented: Option<&str>,
    answer: rollgate_domain::binding::GateAnswer,
) -> Result<(), Problem> {
    let b = folded.binding().ok_or_else(Problem::internal)?;
    let actor = tool_actor(b);
    let ctx = BindingContext {
        actor: actor.clone(),
        now: state.clock.now(),
    };
    let command = BindingCommand::RecordGateAnswer {
        presented_secret: presented.map(str::to_owned),
        answer,
    };
    let events = decide_binding(folded, command, &ctx).map_err(binding_problem)?;
    match append(
        state,
        req,
        id,
        ExpectedVersion::Exact(version),
        &events,
        &actor,
        &b.team,
    )
    .await
    {
        Err(p) if p.status == 409 => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Checks the presented secret before anything is read about the rollout.
fn authentic(folded: &BindingState, presented: Option<&str>) -> Result<(), Problem> {
    let ok = folded.binding().is_some_and(|b| {
        b.status == rollgate_domain::binding::BindingStatus::Active
            && presented.is_some_and(|s| b.secret_hash.matches(s))
    });
    if ok {
        Ok(())
    } else {
        Err(binding_problem(BindingError::Unauthenticated))
    }
}

/// `POST /v1/integrations/flagger`.
pub async fn flagger(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Answer {
    let raw = body::read_limited(&req, &mut payload.into_inner()).await?;
    let call: FlaggerCall = body::json(&req, &raw)?;
    let ask = call.ask().map_err(Problem::invalid)?;
    let unauthenticated = || binding_problem(BindingError::Unauthenticated);
    let (folded, version) = load_binding(&state, ask.binding_id).await?;
    authentic(&folded, call.secret())?;
    let b = folded.binding().ok_or_else(unauthenticated)?;
    if !flagger_target_matches(b, &call, &ask) {
        return Err(Problem::forbidden(format!(
            "binding {} is not bound to canary {}/{}",
            b.id, call.namespace, call.name
        ))
        .with_rule("permission"));
    }
    let (current, _) = state.cache.rollout(&*state.store, &b.rollout_id).await?;
    let r = current.rollout().ok_or_else(Problem::rollout_not_found)?;
    let policy = policy_of(&state, &r.team).await?;
    let a = answer_flagger(b, r, &policy, state.clock.now(), &call, &ask);
    record(
        &state,
        &req,
        b.id,
        &folded,
        version,
        call.secret(),
        a.answer,
    )
    .await?;
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
    let policy = policy_of(&state, &r.team).await?;
    let a = answer_poll(
        b,
        r,
        &policy,
        state.clock.now(),
        q.stage.map(StageIndex::new),
    );
    record(&state, &req, id, &folded, version, bearer(&req), a.answer).await?;
    Ok(HttpResponse::Ok().json(a.gate))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagdQuery {
    team: String,
}

/// `GET /v1/flags/flagd.json?team=T`: any role of the team; `ETag` / `If-None-Match`.
pub async fn flagd(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    q: Query<FlagdQuery>,
) -> Answer {
    let team = Team::parse(&q.team).map_err(|e| Problem::invalid_field("team", e.message))?;
    if !caller.may_see(&team) {
        return Err(Problem::not_found("team not found").with_rule("R11"));
    }
    require_some_role(&caller)?;
    let pool = state.store.pool();
    let mut filter = rollgate_projections::RolloutFilter::new(caller.actor.teams.clone());
    filter.team = Some(team.as_str().to_owned());
    let mut states: Vec<RolloutState> = Vec::new();
    let mut cursor: Option<String> = None;
    // bounded: at most 100 pages of 1000 rollouts
    for _ in 0..100 {
        let page = rollgate_projections::list_rollouts(&pool, &filter, cursor.as_deref(), 1000)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot list rollouts");
                Problem::internal()
            })?;
        for s in &page.items {
            if let Ok(id) = RolloutId::parse(&s.id) {
                states.push(state.cache.rollout(&*state.store, &id).await?.0);
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let file = flag_file(&team, states.iter().filter_map(RolloutState::rollout));
    let bytes = serde_json::to_vec_pretty(&file).map_err(|_| Problem::internal())?;
    let etag = format!("\"{}\"", hex::encode(Sha256::digest(&bytes)));
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .content_type("application/json")
        .body(bytes))
}
