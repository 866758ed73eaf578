//! The rollout endpoints: every governance action on one rollout, and the reads answered
//! from its stream (`GET /v1/rollouts/{id}` with `as_of`, and its events).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use rollgate_domain::{
    AnnotationId, CreateRolloutSpec, DecisionId, DeviationId, NoteAudience, PlanSpec, Reading,
    RequestId, RolloutCommand, RolloutId, Rule, StageIndex,
};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::Caller;
use crate::body::{Json, OptionalJson};
use crate::cache::AsOf;
use crate::execute::{domain_problem, load_rollout, rollout_command, Call, RequestMeta};
use crate::idempotency::Reply;
use crate::problem::{FieldError, Problem};
use crate::AppState;

pub fn parse_rollout_id(raw: &str) -> Result<RolloutId, Problem> {
    RolloutId::parse(raw).map_err(|_| Problem::rollout_not_found())
}

/// A body for commands that take no input: absent, or `{}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoInput {}

/// Runs a rollout command once per Idempotency-Key and answers with the new version.
async fn run(
    call: Call<'_>,
    id: RolloutId,
    status: StatusCode,
    command: RolloutCommand,
    extra: Value,
) -> Result<HttpResponse, Problem> {
    let meta = RequestMeta::of(call.req);
    call.once(|| async {
        let if_match = if_match(call.req, &command)?;
        let w = rollout_command(call.state, call.caller, &meta, &id, if_match, command).await?;
        let mut body = w.body(extra);
        body["rollout_id"] = json!(id.to_string());
        Ok(Reply {
            status,
            etag: Some(w.etag()),
            location: (status == StatusCode::CREATED).then(|| format!("/v1/rollouts/{id}")),
            body,
        })
    })
    .await
}

/// `If-Match` is required on plan revisions (428 without it) and honoured elsewhere.
fn if_match(req: &HttpRequest, command: &RolloutCommand) -> Result<Option<u64>, Problem> {
    let header = req.headers().get("if-match").and_then(|v| v.to_str().ok());
    match header {
        // `*` matches any current version of an existing rollout (RFC 9110).
        Some(v) if v.trim() == "*" => Ok(None),
        Some(v) => v
            .trim()
            .trim_start_matches("W/")
            .trim_matches('"')
            .parse::<u64>()
            .map(Some)
            .map_err(|_| {
                Problem::new(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition-failed",
                    "Precondition failed",
                    "If-Match must carry the ETag of the rollout (its stream version)",
                )
            }),
        None if matches!(command, RolloutCommand::RevisePlan { .. }) => Err(Problem::new(
            StatusCode::PRECONDITION_REQUIRED,
            "precondition-required",
            "Precondition required",
            "plan revisions need If-Match with the rollout's current ETag",
        )),
        None => Ok(None),
    }
}

fn field<T, E: std::fmt::Display>(r: Result<T, E>, name: &str) -> Result<T, Problem> {
    r.map_err(|e| Problem::invalid_field(name, e.to_string()))
}

pub async fn create(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Json<CreateRolloutSpec>,
) -> Result<HttpResponse, Problem> {
    let id = RolloutId::new(Uuid::new_v4());
    let command = body.value.parse(id).map_err(|errors| {
        Problem::validation(
            errors
                .0
                .into_iter()
                .map(|v| FieldError {
                    field: v.field,
                    message: v.message,
                })
                .collect(),
        )
    })?;
    // R11 answers 404 for a team outside the caller's teams, as for policies.
    if let RolloutCommand::Create { team, .. } = &command {
        if !caller.may_see(team) {
            return Err(Problem::not_found("team not found").with_rule("R11"));
        }
    }
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::CREATED,
        command,
        json!({}),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviseBody {
    plan: PlanSpec,
}

pub async fn revise_plan(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<ReviseBody>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let plan = rollgate_domain::Plan::parse(body.value.plan)
        .map_err(|e| domain_problem(rollgate_domain::DomainError::Validation(e)))?;
    let command = RolloutCommand::RevisePlan { plan };
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::OK,
        command,
        json!({}),
    )
    .await
}

pub async fn sign_off(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: OptionalJson<NoInput>,
) -> Result<HttpResponse, Problem> {
    let (id, item) = path.into_inner();
    let id = parse_rollout_id(&id)?;
    let command = RolloutCommand::SignOffReadiness { item_key: item };
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::OK,
        command,
        json!({}),
    )
    .await
}

/// Commands that take nothing but the rollout id.
macro_rules! bare_command {
    ($name:ident, $command:expr) => {
        pub async fn $name(
            state: web::Data<AppState>,
            caller: Caller,
            req: HttpRequest,
            path: web::Path<String>,
            body: OptionalJson<NoInput>,
        ) -> Result<HttpResponse, Problem> {
            let id = parse_rollout_id(&path)?;
            run(
                Call::new(&state, &caller, &req, &body.raw),
                id,
                StatusCode::OK,
                $command,
                json!({}),
            )
            .await
        }
    };
}

bare_command!(start, RolloutCommand::Start);
bare_command!(resume, RolloutCommand::Resume);
bare_command!(complete, RolloutCommand::Complete);

pub async fn request_advance(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: OptionalJson<NoInput>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let request_id = RequestId::new(Uuid::new_v4());
    let command = RolloutCommand::RequestAdvance { request_id };
    let extra = json!({ "request_id": request_id.to_string() });
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::CREATED,
        command,
        extra,
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalDecision {
    Approve,
    Reject,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalBody {
    decision: ApprovalDecision,
    #[serde(default)]
    comment: Option<String>,
}

fn parse_request_id(raw: &str) -> Result<RequestId, Problem> {
    RequestId::parse(raw).map_err(|_| Problem::not_found("advance request not found"))
}

pub async fn decide_request(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: Json<ApprovalBody>,
) -> Result<HttpResponse, Problem> {
    let (id, rid) = path.into_inner();
    let id = parse_rollout_id(&id)?;
    let request_id = parse_request_id(&rid)?;
    let command = match body.value.decision {
        ApprovalDecision::Approve => RolloutCommand::Approve {
            request_id,
            comment: body.value.comment,
        },
        ApprovalDecision::Reject => RolloutCommand::Reject {
            request_id,
            comment: body.value.comment.unwrap_or_default(),
        },
    };
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::CREATED,
        command,
        json!({}),
    )
    .await
}

pub async fn withdraw(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: OptionalJson<NoInput>,
) -> Result<HttpResponse, Problem> {
    let (id, rid) = path.into_inner();
    let id = parse_rollout_id(&id)?;
    let request_id = parse_request_id(&rid)?;
    let command = RolloutCommand::WithdrawRequest { request_id };
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::OK,
        command,
        json!({}),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvanceBody {
    request_id: String,
    /// Rationale recorded when success criteria are inconclusive at the end of the soak.
    #[serde(default)]
    inconclusive_override: Option<String>,
}

pub async fn advance(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<AdvanceBody>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let request_id = field(RequestId::parse(&body.value.request_id), "request_id")?;
    let command = RolloutCommand::Advance {
        request_id,
        inconclusive_override: body.value.inconclusive_override,
    };
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::OK,
        command,
        json!({}),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    reason: String,
}

pub async fn pause(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<ReasonBody>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let command = RolloutCommand::Pause {
        reason: body.value.reason,
    };
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::OK,
        command,
        json!({}),
    )
    .await
}

pub async fn abort(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<ReasonBody>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let command = RolloutCommand::Abort {
        reason: body.value.reason,
    };
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::OK,
        command,
        json!({}),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    to_stage: Option<i64>,
}

pub async fn rollback(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<RollbackBody>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let to_stage = body
        .value
        .to_stage
        .map(|s| field(StageIndex::parse(s), "to_stage"))
        .transpose()?;
    let command = RolloutCommand::Rollback {
        to_stage,
        reason: body.value.reason,
    };
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::OK,
        command,
        json!({}),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingsBody {
    readings: Vec<Reading>,
}

pub async fn metrics(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<ReadingsBody>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    if body.value.readings.is_empty() {
        return Err(Problem::invalid_field(
            "readings",
            "at least one reading is needed",
        ));
    }
    let command = RolloutCommand::RecordReadings {
        readings: body.value.readings,
    };
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::OK,
        command,
        json!({}),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviationBody {
    rules: Vec<String>,
    justification: String,
    expires_at: DateTime<Utc>,
}

pub async fn request_deviation(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<DeviationBody>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let mut rules = Vec::new();
    for (i, r) in body.value.rules.iter().enumerate() {
        rules.push(field(Rule::parse(r), &format!("rules[{i}]"))?);
    }
    let deviation_id = DeviationId::new(Uuid::new_v4());
    let command = RolloutCommand::RequestDeviation {
        deviation_id,
        rules,
        justification: body.value.justification,
        expires_at: body.value.expires_at,
    };
    let extra = json!({ "deviation_id": deviation_id.to_string() });
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::CREATED,
        command,
        extra,
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviationVerdict {
    Grant,
    Deny,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviationDecisionBody {
    decision: DeviationVerdict,
    #[serde(default)]
    comment: String,
}

pub async fn decide_deviation(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<DeviationDecisionBody>,
) -> Result<HttpResponse, Problem> {
    // R11: another team's deviation answers exactly as one that does not exist.
    let not_found = || Problem::not_found("deviation not found").with_rule("R11");
    let deviation_id = DeviationId::parse(&path).map_err(|_| not_found())?;
    let id = match indexed_deviation(&state, &caller, &deviation_id).await {
        Some(Ok(id)) => id,
        Some(Err(())) => return Err(not_found()),
        // Not projected yet (or the index cannot be read): from the events themselves.
        None => {
            let id = deviation_rollout_from_events(&state, &deviation_id)
                .await?
                .ok_or_else(not_found)?;
            let (current, _, _) = load_rollout(&*state.store, &id).await?;
            if !current.rollout().is_some_and(|r| caller.may_see(&r.team)) {
                return Err(not_found());
            }
            id
        }
    };
    let comment = body.value.comment;
    let command = match body.value.decision {
        DeviationVerdict::Grant => RolloutCommand::GrantDeviation {
            deviation_id,
            comment,
        },
        DeviationVerdict::Deny => RolloutCommand::DenyDeviation {
            deviation_id,
            comment,
        },
    };
    let extra = json!({ "deviation_id": deviation_id.to_string() });
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::OK,
        command,
        extra,
    )
    .await
}

/// Which rollout a deviation belongs to, from the deviation index read model: `None` when
/// the index does not know the deviation (yet), `Some(Err(()))` when it belongs to a team
/// outside the caller's (R11).
async fn indexed_deviation(
    state: &AppState,
    caller: &Caller,
    deviation_id: &DeviationId,
) -> Option<Result<RolloutId, ()>> {
    let found =
        rollgate_projections::deviation_rollout(&state.store.pool(), deviation_id.as_uuid()).await;
    let d = match found {
        Ok(d) => d?,
        Err(e) => {
            tracing::warn!(error = %e, "deviation index unreadable; reading the log");
            return None;
        }
    };
    let team = rollgate_domain::Team::parse(&d.team).ok()?;
    if !caller.may_see(&team) {
        return Some(Err(()));
    }
    RolloutId::parse(&d.rollout_id).ok().map(Ok)
}

/// Which rollout a deviation belongs to, from the event that requested it.
async fn deviation_rollout_from_events(
    state: &AppState,
    deviation_id: &DeviationId,
) -> Result<Option<RolloutId>, Problem> {
    use rollgate_store::DatabasePool;
    let did = deviation_id.to_string();
    let stream: Option<String> = match state.store.pool() {
        DatabasePool::Postgres(p) => {
            sqlx::query_scalar(
                "SELECT stream FROM events WHERE event_type = 'DeviationRequested' \
             AND payload->>'deviation_id' = $1 LIMIT 1",
            )
            .bind(&did)
            .fetch_optional(&p)
            .await
        }
        DatabasePool::Sqlite(p) => {
            sqlx::query_scalar(
                "SELECT stream FROM events WHERE event_type = 'DeviationRequested' \
             AND json_extract(payload, '$.deviation_id') = ? LIMIT 1",
            )
            .bind(&did)
            .fetch_optional(&p)
            .await
        }
    }
    .map_err(|e| Problem::from(rollgate_store::StoreError::from(e)))?;
    Ok(stream
        .as_deref()
        .and_then(|s| s.strip_prefix("rollout-"))
        .and_then(|s| RolloutId::parse(s).ok()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    title: String,
    rationale: String,
    #[serde(default)]
    alternatives: Vec<String>,
    outcome: String,
}

pub async fn record_decision(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<DecisionBody>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let decision_id = DecisionId::new(Uuid::new_v4());
    let b = body.value;
    let command = RolloutCommand::RecordDecision {
        decision_id,
        title: b.title,
        rationale: b.rationale,
        alternatives: b.alternatives,
        outcome: b.outcome,
    };
    let extra = json!({ "decision_id": decision_id.to_string() });
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::CREATED,
        command,
        extra,
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    audience: NoteAudience,
    text: String,
}

pub async fn add_note(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<NoteBody>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let command = RolloutCommand::AddNote {
        audience: body.value.audience,
        text: body.value.text,
    };
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::CREATED,
        command,
        json!({}),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationBody {
    text: String,
    #[serde(default)]
    about: Option<String>,
}

pub async fn annotate(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<AnnotationBody>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let annotation_id = AnnotationId::new(Uuid::new_v4());
    let command = RolloutCommand::Annotate {
        annotation_id,
        about: body.value.about,
        text: body.value.text,
    };
    let extra = json!({ "annotation_id": annotation_id.to_string() });
    run(
        Call::new(&state, &caller, &req, &body.raw),
        id,
        StatusCode::CREATED,
        command,
        extra,
    )
    .await
}

// ---------------------------------------------------------------------------------------
// Reads answered from the stream.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsOfQuery {
    #[serde(default)]
    as_of: Option<String>,
    #[serde(default)]
    min_position: Option<String>,
}

/// Read-your-writes for reads served from the log itself: a position the log has not
/// reached yet is waited for (bounded), then answered 503 with `Retry-After`.
async fn wait_for_log(state: &AppState, raw: Option<&str>) -> Result<(), Problem> {
    let Some(wanted) = crate::reads::parse_min_position(raw)? else {
        return Ok(());
    };
    let mut signal = state.store.subscribe();
    if state.store.head().await?.position >= wanted {
        return Ok(());
    }
    let reached = tokio::time::timeout(state.read_wait, signal.wait_for(|p| *p >= wanted)).await;
    if matches!(reached, Ok(Ok(_))) || state.store.head().await?.position >= wanted {
        Ok(())
    } else {
        Err(Problem::unavailable(
            format!("the log has not reached position {wanted} yet"),
            1,
        ))
    }
}

fn parse_as_of(raw: &str) -> Result<AsOf, Problem> {
    if let Ok(p) = raw.parse::<u64>() {
        return Ok(AsOf::Position(p));
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| AsOf::Time(t.with_timezone(&Utc)))
        .map_err(|_| {
            Problem::invalid_field("as_of", "must be a global position or an RFC 3339 time")
        })
}

/// `GET /v1/rollouts/{id}`: the rollout now, or `as_of` a position or time (by replay from
/// the nearest checkpoint of the stream).
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<AsOfQuery>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let as_of = query.as_of.as_deref().map(parse_as_of).transpose()?;
    wait_for_log(&state, query.min_position.as_deref()).await?;
    let as_of = as_of.unwrap_or(AsOf::Position(u64::MAX));
    let (now, then, as_of_position) = state.cache.rollout_as_of(&*state.store, &id, as_of).await?;
    // R11 is judged on the rollout as it is now, so a time before it existed leaks nothing.
    let rollout = now.rollout().ok_or_else(Problem::rollout_not_found)?;
    if !caller.may_see(&rollout.team) {
        return Err(Problem::rollout_not_found());
    }
    let Some(r) = then.rollout() else {
        return Err(Problem::not_found(
            "the rollout did not exist at that point",
        ));
    };
    Ok(HttpResponse::Ok()
        .insert_header(("ETag", format!("\"{}\"", r.version)))
        .json(view(r, as_of_position)))
}

/// The client view of a rollout.
pub fn view(r: &rollgate_domain::rollout::Rollout, as_of_position: Option<u64>) -> Value {
    let stage = r.current_stage();
    json!({
        "id": r.id.to_string(),
        "feature_key": r.feature_key,
        "title": r.title,
        "team": r.team,
        "status": r.status,
        "stage": r.position,
        "stage_name": stage.map(|s| s.name.clone()),
        "exposure_percentage": r.exposure(),
        "plan_revision": r.plan_revision,
        "plan": r.plan,
        "readiness_signed": r.readiness_signed,
        "unsigned_readiness": r.unsigned_items(),
        "open_request": r.open_request.map(|x| x.to_string()),
        "requests": r.requests,
        "deviations": r.deviations,
        "stage_entered_at": r.stage_entered_at,
        "created_by": r.created_by,
        "created_at": r.created_at,
        "updated_at": r.updated_at,
        "version": r.version,
        "as_of_position": as_of_position,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    min_position: Option<String>,
}

pub fn parse_limit(limit: Option<i64>) -> Result<usize, Problem> {
    match limit {
        None => Ok(100),
        Some(l) if (1..=1000).contains(&l) => Ok(l as usize),
        Some(_) => Err(Problem::invalid_field(
            "limit",
            "must be between 1 and 1000",
        )),
    }
}

/// `GET /v1/rollouts/{id}/events`: the stream, upcast, in version order.
pub async fn events(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let limit = parse_limit(query.limit)?;
    wait_for_log(&state, query.min_position.as_deref()).await?;
    let after: u64 = match &query.cursor {
        None => 0,
        Some(c) => c
            .parse()
            .map_err(|_| Problem::invalid_field("cursor", "not a cursor from this endpoint"))?,
    };
    // Only the team is needed here: the cached state costs a tail read, not the stream.
    let (current, _) = state.cache.rollout(&*state.store, &id).await?;
    let rollout = current.rollout().ok_or_else(Problem::rollout_not_found)?;
    if !caller.may_see(&rollout.team) {
        return Err(Problem::rollout_not_found());
    }
    let page = state
        .store
        .read_stream(&crate::execute::rollout_stream(&id), after + 1, limit + 1)
        .await?;
    let more = page.len() > limit;
    let mut items = Vec::new();
    for e in page.iter().take(limit) {
        let decoded = rollgate_domain::RolloutEvent::from_stored(
            &e.event_type,
            e.schema_version,
            e.payload.clone(),
        )
        .map_err(|_| Problem::internal())?;
        items.push(json!({
            "position": e.position,
            "version": e.version,
            "id": e.id,
            "type": e.event_type,
            "schema_version": decoded.schema_version(),
            "stored_schema_version": e.schema_version,
            "payload": decoded.payload(),
            "summary": decoded.summary(),
            "metadata": e.metadata,
            "recorded_at": rollgate_store::chain::format_time(&e.recorded_at),
            "hash": e.hash,
        }));
    }
    let next = if more {
        page.get(limit - 1).map(|e| e.version.to_string())
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(json!({ "items": items, "next_cursor": next })))
}
