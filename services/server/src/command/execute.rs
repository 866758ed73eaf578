//! Running a command: load the stream, fold it, decide under the policy in force, append
//! the events with the metadata rule R12 asks for, retry on a concurrent write while the
//! command is still valid. Side effects happen only after the events are stored.

use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest};
use rollgate_domain::{
    decide, decide_policy, Context, DomainError, ErrorKind, PolicyCommand, PolicyContext,
    PolicyEvent, PolicySnapshot, RolloutCommand, RolloutEvent, RolloutId, RolloutState, Team,
};
use rollgate_store::{
    read_whole_stream, EventData, EventStore, ExpectedVersion, RecordedEvent, StoreError,
};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::Caller;
use crate::observe::RequestId;
use crate::problem::{FieldError, Problem};
use crate::AppState;

/// How many times a command is re-decided after losing a race to another writer.
const MAX_ATTEMPTS: usize = 5;

pub fn rollout_stream(id: &RolloutId) -> String {
    format!("rollout-{id}")
}

pub fn policy_stream(team: &Team) -> String {
    format!("policy-{team}")
}

/// What a successful write answers.
#[derive(Debug, Clone)]
pub struct Written {
    pub stream_version: u64,
    pub first_position: u64,
    pub last_position: u64,
    pub event_types: Vec<&'static str>,
}

impl Written {
    fn new(o: rollgate_store::AppendOutcome, event_types: Vec<&'static str>) -> Self {
        Written {
            stream_version: o.stream_version,
            first_position: o.first_position,
            last_position: o.last_position,
            event_types,
        }
    }

    pub fn etag(&self) -> String {
        format!("\"{}\"", self.stream_version)
    }

    pub fn body(&self, extra: Value) -> Value {
        let mut body = json!({
            "stream_version": self.stream_version,
            "position": self.last_position,
            "first_position": self.first_position,
            "events": self.event_types,
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        body
    }
}

/// The parts of a request every write needs.
pub struct Call<'a> {
    pub state: &'a AppState,
    pub caller: &'a Caller,
    pub req: &'a HttpRequest,
    pub raw: &'a [u8],
}

impl<'a> Call<'a> {
    pub fn new(
        state: &'a AppState,
        caller: &'a Caller,
        req: &'a HttpRequest,
        raw: &'a [u8],
    ) -> Self {
        Call {
            state,
            caller,
            req,
            raw,
        }
    }

    /// Runs `write` at most once per (caller, `Idempotency-Key`) and answers its reply.
    pub async fn once<F, Fut>(&self, write: F) -> Result<actix_web::HttpResponse, Problem>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<crate::idempotency::Reply, Problem>>,
    {
        let pool = self.state.store.pool();
        let now = self.state.clock.now();
        crate::idempotency::once(&pool, self.caller.sub(), self.req, self.raw, now, write).await
    }
}

/// The request facts every event records (R12).
pub struct RequestMeta {
    pub request_id: String,
    pub correlation_id: String,
    pub causation_id: Option<String>,
}

impl RequestMeta {
    pub fn of(req: &HttpRequest) -> Self {
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 128)
                .map(str::to_owned)
        };
        RequestMeta {
            correlation_id: header("x-correlation-id").unwrap_or_else(|| request_id.clone()),
            causation_id: header("x-causation-id"),
            request_id,
        }
    }
}

/// Stored form of decided events (fresh ids, shared metadata), and their type names.
fn event_data(
    events: impl Iterator<Item = (&'static str, u32, Value)>,
    metadata: &Value,
) -> (Vec<EventData>, Vec<&'static str>) {
    events
        .map(|(event_type, schema_version, payload)| {
            let data = EventData {
                id: Uuid::new_v4(),
                event_type: event_type.to_owned(),
                schema_version,
                payload,
                metadata: metadata.clone(),
            };
            (data, event_type)
        })
        .unzip()
}

fn metadata(caller: &Caller, team: &Team, meta: &RequestMeta, policy_version: u64) -> Value {
    json!({
        "actor": { "id": caller.actor.id.as_str(), "roles": caller.actor.roles },
        "team": team.as_str(),
        "request_id": meta.request_id,
        "correlation_id": meta.correlation_id,
        "causation_id": meta.causation_id,
        "policy_version": policy_version,
    })
}

/// Maps a domain refusal to its problem: the rule travels in `rule`.
pub fn domain_problem(e: DomainError) -> Problem {
    let rule = e.rule().map(|r| r.id().to_owned());
    let detail = e.to_string();
    let p = match (e.kind(), e) {
        (ErrorKind::Validation, DomainError::Validation(errors)) => Problem::validation(
            errors
                .0
                .into_iter()
                .map(|v| FieldError {
                    field: v.field,
                    message: v.message,
                })
                .collect(),
        ),
        (ErrorKind::Validation, DomainError::RollbackReasonMissing) => {
            Problem::invalid_field("reason", detail)
        }
        (ErrorKind::Validation, _) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid request",
            detail,
        ),
        // An id that names nothing on this rollout: the resource does not exist.
        (_, DomainError::UnknownRequest(_)) => Problem::not_found(detail),
        (_, DomainError::UnknownDeviation(_)) => Problem::not_found(detail),
        (ErrorKind::Forbidden, _) => {
            Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
        }
        (ErrorKind::NotFound, _) => Problem::rollout_not_found(),
        (ErrorKind::Conflict, _) if rule.is_some() => Problem::new(
            StatusCode::CONFLICT,
            "rule-refused",
            "Refused by a governance rule",
            detail,
        ),
        (ErrorKind::Conflict, _) => {
            Problem::new(StatusCode::CONFLICT, "state-conflict", "Conflict", detail)
        }
    };
    match rule {
        Some(r) => p.with_rule(r),
        None => p,
    }
}

/// Decodes (and upcasts) a stored rollout event; an undecodable one is a server fault.
pub(crate) fn decode_rollout(e: &RecordedEvent) -> Result<RolloutEvent, Problem> {
    RolloutEvent::from_stored(&e.event_type, e.schema_version, e.payload.clone()).map_err(|err| {
        tracing::error!(position = e.position, error = %err, "undecodable stored event");
        Problem::internal()
    })
}

/// A rollout's state from its stream, with the decoded events.
pub async fn load_rollout(
    store: &dyn EventStore,
    id: &RolloutId,
) -> Result<(RolloutState, Vec<RecordedEvent>, Vec<RolloutEvent>), Problem> {
    let recorded = read_whole_stream(store, &rollout_stream(id)).await?;
    let events = recorded
        .iter()
        .map(decode_rollout)
        .collect::<Result<Vec<_>, _>>()?;
    let state = RolloutState::from_events(&events);
    Ok((state, recorded, events))
}

/// The policy in force for `team` (defaults until one is published).
async fn policy_snapshot(state: &AppState, team: &Team) -> Result<PolicySnapshot, Problem> {
    Ok(state.cache.policy(&*state.store, team).await?.0.snapshot())
}

/// Decides and appends one rollout command. `if_match` pins the stream version the client
/// saw (plan revisions); without it a lost race is re-decided on the new state.
pub async fn rollout_command(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    id: &RolloutId,
    if_match: Option<u64>,
    command: RolloutCommand,
) -> Result<Written, Problem> {
    let creating = matches!(command, RolloutCommand::Create { .. });
    for _ in 0..MAX_ATTEMPTS {
        let (current, version) = state.cache.rollout(&*state.store, id).await?;
        if let Some(expected) = if_match {
            if current.is_created() && expected != version {
                return Err(precondition_failed(expected, version));
            }
        }
        let team = match (&command, current.rollout()) {
            (_, Some(r)) => r.team.clone(),
            (RolloutCommand::Create { team, .. }, None) => team.clone(),
            (_, None) => return Err(Problem::rollout_not_found()),
        };
        let ctx = Context {
            actor: caller.actor.clone(),
            now: state.clock.now(),
            policy: policy_snapshot(state, &team).await?,
        };
        let events = decide(&current, command.clone(), &ctx).map_err(domain_problem)?;
        let md = metadata(caller, &team, meta, ctx.policy.version);
        let stored = events
            .iter()
            .map(|e| (e.event_type(), e.schema_version(), e.payload()));
        let (data, types) = event_data(stored, &md);
        let expected = if creating {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        match state
            .store
            .append(&rollout_stream(id), expected, data)
            .await
        {
            Ok(o) => return Ok(Written::new(o, types)),
            Err(StoreError::WrongExpectedVersion { current, .. }) if if_match.is_some() => {
                return Err(precondition_failed(if_match.unwrap_or(0), current));
            }
            Err(StoreError::WrongExpectedVersion { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Problem::new(
        StatusCode::CONFLICT,
        "version-conflict",
        "Version conflict",
        "the rollout kept changing while this command was decided; retry",
    ))
}

/// Decides and appends one policy command for `team`.
pub async fn policy_command(
    state: &AppState,
    caller: &Caller,
    meta: &RequestMeta,
    team: &Team,
    command: PolicyCommand,
) -> Result<Written, Problem> {
    for _ in 0..MAX_ATTEMPTS {
        let (current, version) = state.cache.policy(&*state.store, team).await?;
        let ctx = PolicyContext {
            actor: caller.actor.clone(),
            now: state.clock.now(),
            team: team.clone(),
        };
        let events = decide_policy(&current, command.clone(), &ctx).map_err(domain_problem)?;
        let policy_version = events
            .iter()
            .find_map(|e| match e {
                PolicyEvent::PolicyPublished { version, .. } => Some(*version),
                _ => None,
            })
            .unwrap_or_else(|| current.snapshot().version);
        let md = metadata(caller, team, meta, policy_version);
        let stored = events
            .iter()
            .map(|e| (e.event_type(), e.schema_version(), e.payload()));
        let (data, types) = event_data(stored, &md);
        match state
            .store
            .append(&policy_stream(team), ExpectedVersion::Exact(version), data)
            .await
        {
            Ok(o) => return Ok(Written::new(o, types)),
            Err(StoreError::WrongExpectedVersion { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Problem::new(
        StatusCode::CONFLICT,
        "version-conflict",
        "Version conflict",
        "the policy kept changing while this command was decided; retry",
    ))
}

fn precondition_failed(expected: u64, current: u64) -> Problem {
    let mut p = Problem::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition-failed",
        "Precondition failed",
        format!("If-Match names version {expected} but the rollout is at version {current}"),
    );
    p.current_version = Some(current);
    p
}
