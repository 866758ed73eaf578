//! Request extractors, so that a write handler is its command and nothing else.
//!
//! - [`Write`]: the state, the authenticated caller, the request's metadata and its raw
//!   body (creating a rollout).
//! - [`RolloutWrite`]: a [`Write`] on the rollout named by the path's `{id}`; R11 is
//!   checked before anything else is looked at (If-Match, Idempotency-Key, the body), so
//!   another team's rollout answers exactly as an unknown id.
//! - [`DeviationWrite`]: a [`RolloutWrite`] on the rollout of the path's `{did}` (roles
//!   first, then the indexed look-up).
//! - [`PolicyWrite`]: a [`Write`] on the team named by the path's `{team}` (R11 first).
//! - [`RolloutRead`]: the state, the caller and the path's rollout, R11 checked.
//!
//! Each has `run(status, command)`, which does idempotency, If-Match, decide, append and
//! the reply.

use std::collections::BTreeMap;
use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, HttpResponse};
use futures::future::LocalBoxFuture;
use rollgate_domain::{
    DeviationId, DomainError, PolicyCommand, RolloutCommand, RolloutId, RolloutState, Team,
};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use uuid::Uuid;

use crate::command::{Ids, Issuer, RequestMeta, Written};
use crate::events::rollout_of_stream;
use crate::http::body;
use crate::http::caller::{authenticate_refreshing, Caller};
use crate::http::idempotency::{self, Reply};
use crate::http::observe::{ClientRequestId, RequestId};
use crate::http::problem::{Problem, ProblemType};
use crate::state::AppState;
use crate::views::WriteReply;

/// A body for commands that take no input: absent, or `{}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoInput {}

/// Implements `FromRequest` for an extractor built by an async fn of the request and its
/// payload.
macro_rules! async_extractor {
    ($type:ty, $build:path) => {
        impl FromRequest for $type {
            type Error = Problem;
            type Future = LocalBoxFuture<'static, Result<Self, Problem>>;

            fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
                Box::pin($build(req.clone(), payload.take()))
            }
        }
    };
}

/// The parts of a request every write needs.
pub struct Write {
    pub state: web::Data<AppState>,
    pub caller: Caller,
    pub req: HttpRequest,
    pub raw: web::Bytes,
    meta: RequestMeta,
    ids: Ids,
}

async fn state_and_caller(req: &HttpRequest) -> Result<(web::Data<AppState>, Caller), Problem> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(Problem::internal)?;
    Ok((state, authenticate_refreshing(req).await?))
}

/// The request facts its events record (R12).
pub fn meta_of(req: &HttpRequest) -> RequestMeta {
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let client_request_id = req
        .extensions()
        .get::<ClientRequestId>()
        .map(|r| r.0.clone());
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
        client_request_id,
        request_id,
    }
}

impl Write {
    async fn read(
        state: web::Data<AppState>,
        caller: Caller,
        req: HttpRequest,
        mut payload: Payload,
    ) -> Result<Self, Problem> {
        let raw = body::read_limited(&req, &mut payload).await?;
        let ids = match idempotency::key_of(&req) {
            Ok(Some(key)) => {
                Ids::derived(caller.sub(), &key, &idempotency::fingerprint(&req, &raw))
            }
            _ => Ids::Random,
        };
        Ok(Write {
            meta: meta_of(&req),
            state,
            caller,
            req,
            raw,
            ids,
        })
    }

    /// The JSON body as `T` (415, 400 or 422 when it is not one).
    pub fn body<T: DeserializeOwned>(&self) -> Result<T, Problem> {
        body::json(&self.req, &self.raw)
    }

    /// Commands that take no input: no body, or `{}`.
    pub fn no_input(&self) -> Result<(), Problem> {
        body::optional_json::<NoInput>(&self.req, &self.raw).map(|_| ())
    }

    /// A path parameter (empty when the route has none by that name).
    pub fn path(&self, name: &str) -> &str {
        self.req.match_info().get(name).unwrap_or_default()
    }

    /// The id of something this request creates: derived from its Idempotency-Key when it
    /// has one (a rerun creates the same thing), else random.
    pub fn new_id(&self, label: &str) -> Uuid {
        self.ids.named(label)
    }

    /// Who issues this request's command.
    pub fn issuer(&self) -> Issuer<'_> {
        Issuer {
            state: &self.state,
            actor: &self.caller.actor,
            meta: &self.meta,
            ids: &self.ids,
        }
    }

    /// Runs `write` at most once per (caller, Idempotency-Key) and answers its reply.
    async fn once<F, Fut>(&self, write: F) -> Result<HttpResponse, Problem>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Reply, Problem>>,
    {
        let pool = self.state.store.pool();
        let now = self.state.clock.now();
        idempotency::once(&pool, self.caller.sub(), &self.req, &self.raw, now, write).await
    }

    /// `POST /v1/rollouts`: creates rollout `id` (201 with its Location).
    pub async fn create(
        self,
        id: RolloutId,
        command: RolloutCommand,
    ) -> Result<HttpResponse, Problem> {
        let target = RolloutWrite { write: self, id };
        target
            .run_with(StatusCode::CREATED, command, BTreeMap::new())
            .await
    }
}

async fn write_of(req: HttpRequest, payload: Payload) -> Result<Write, Problem> {
    let (state, caller) = state_and_caller(&req).await?;
    Write::read(state, caller, req, payload).await
}

async_extractor!(Write, write_of);

/// A rollout id from a path: one that cannot be an id names no rollout (R11's 404).
pub fn parse_rollout_id(raw: &str) -> Result<RolloutId, Problem> {
    RolloutId::parse(raw).map_err(|_| Problem::rollout_not_found())
}

/// The rollout's current state and version, if the caller may see it (R11: otherwise the
/// same 404 as for an id that names nothing).
pub async fn visible_rollout(
    state: &AppState,
    caller: &Caller,
    id: &RolloutId,
) -> Result<(RolloutState, u64), Problem> {
    let (current, version) = state.cache.rollout(&*state.store, id).await?;
    match current.rollout() {
        Some(r) if caller.may_see(&r.team) => Ok((current, version)),
        _ => Err(DomainError::RolloutNotFound.into()),
    }
}

/// A read of one rollout (the path's `{id}`), the caller's team checked first (R11).
pub struct RolloutRead {
    pub state: web::Data<AppState>,
    pub caller: Caller,
    pub id: RolloutId,
}

async fn rollout_read_of(req: HttpRequest, _: Payload) -> Result<RolloutRead, Problem> {
    let (state, caller) = state_and_caller(&req).await?;
    let id = parse_rollout_id(req.match_info().get("id").unwrap_or_default())?;
    visible_rollout(&state, &caller, &id).await?;
    Ok(RolloutRead { state, caller, id })
}

async_extractor!(RolloutRead, rollout_read_of);

/// A write on one rollout (the path's `{id}`), the caller's team checked first.
pub struct RolloutWrite {
    pub write: Write,
    pub id: RolloutId,
}

impl Deref for RolloutWrite {
    type Target = Write;
    fn deref(&self) -> &Write {
        &self.write
    }
}

async fn rollout_write_of(req: HttpRequest, payload: Payload) -> Result<RolloutWrite, Problem> {
    let (state, caller) = state_and_caller(&req).await?;
    let id = parse_rollout_id(req.match_info().get("id").unwrap_or_default())?;
    // R11 on the rollout's team, which never changes: a cached rollout costs no read.
    match state.cache.rollout_team(&*state.store, &id).await? {
        Some(team) if caller.may_see(&team) => {}
        _ => return Err(DomainError::RolloutNotFound.into()),
    }
    let write = Write::read(state, caller, req, payload).await?;
    Ok(RolloutWrite { write, id })
}

async_extractor!(RolloutWrite, rollout_write_of);

impl RolloutWrite {
    /// Runs `command` on the rollout and answers `status` with the new version.
    pub async fn run(
        self,
        status: StatusCode,
        command: RolloutCommand,
    ) -> Result<HttpResponse, Problem> {
        self.run_with(status, command, BTreeMap::new()).await
    }

    /// As [`RolloutWrite::run`], naming what the command created in the reply
    /// (e.g. `request_id`).
    pub async fn run_with(
        self,
        status: StatusCode,
        command: RolloutCommand,
        mut created: BTreeMap<&'static str, String>,
    ) -> Result<HttpResponse, Problem> {
        let id = self.id;
        created.insert("rollout_id", id.to_string());
        self.once(|| async {
            let if_match = if_match(&self.req, &command)?;
            let w = self.issuer().rollout(&id, if_match, command).await?;
            let location = (status == StatusCode::CREATED).then(|| format!("/v1/rollouts/{id}"));
            Ok(reply(status, &w, created, location))
        })
        .await
    }

    /// A path id other than the rollout's (`{rid}`...): one that cannot be an id is a 404.
    pub fn path_id<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, rollgate_domain::ValidationError>,
        what: &str,
    ) -> Result<T, Problem> {
        parse(self.path(name)).map_err(|_| Problem::not_found(format!("{what} not found")))
    }
}

fn reply(
    status: StatusCode,
    w: &Written,
    created: BTreeMap<&'static str, String>,
    location: Option<String>,
) -> Reply {
    Reply {
        status,
        etag: Some(w.etag()),
        location,
        body: WriteReply::new(w, created).to_json(),
    }
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
                    ProblemType::PreconditionFailed,
                    "If-Match must carry the ETag of the rollout (its stream version)",
                )
            }),
        None if matches!(command, RolloutCommand::RevisePlan { .. }) => Err(Problem::new(
            ProblemType::PreconditionRequired,
            "plan revisions need If-Match with the rollout's current ETag",
        )),
        None => Ok(None),
    }
}

/// A write on the rollout a deviation (the path's `{did}`) belongs to.
pub struct DeviationWrite {
    pub rollout: RolloutWrite,
    pub deviation_id: DeviationId,
}

async fn deviation_write_of(req: HttpRequest, payload: Payload) -> Result<DeviationWrite, Problem> {
    let (state, caller) = state_and_caller(&req).await?;
    // Roles first: a read-only caller learns nothing and costs no look-up (R10).
    if caller.actor.is_read_only() {
        return Err(DomainError::ReadOnly {
            actor: caller.actor.id.clone(),
        }
        .into());
    }
    // R11: another team's deviation answers exactly as one that does not exist.
    let not_found = || Problem::not_found("deviation not found").with_rule("R11");
    let raw = req.match_info().get("did").unwrap_or_default();
    let deviation_id = DeviationId::parse(raw).map_err(|_| not_found())?;
    let stream =
        rollgate_projections::deviation_stream(&state.store.pool(), deviation_id.as_uuid()).await?;
    let id = stream
        .as_deref()
        .and_then(rollout_of_stream)
        .ok_or_else(not_found)?;
    match visible_rollout(&state, &caller, &id).await {
        Err(p) if p.status == 404 => return Err(not_found()),
        other => other?,
    };
    let write = Write::read(state, caller, req, payload).await?;
    Ok(DeviationWrite {
        rollout: RolloutWrite { write, id },
        deviation_id,
    })
}

async_extractor!(DeviationWrite, deviation_write_of);

/// A write on a team's policy (the path's `{team}`), the caller's team checked first.
pub struct PolicyWrite {
    pub write: Write,
    pub team: Team,
}

impl Deref for PolicyWrite {
    type Target = Write;
    fn deref(&self) -> &Write {
        &self.write
    }
}

async fn policy_write_of(req: HttpRequest, payload: Payload) -> Result<PolicyWrite, Problem> {
    let (state, caller) = state_and_caller(&req).await?;
    let raw = req.match_info().get("team").unwrap_or_default();
    let team = Team::parse(raw).map_err(|e| Problem::invalid_field("team", e.to_string()))?;
    caller.require_team(&team)?;
    let write = Write::read(state, caller, req, payload).await?;
    Ok(PolicyWrite { write, team })
}

async_extractor!(PolicyWrite, policy_write_of);

impl PolicyWrite {
    /// Runs `command` on the team's policy and answers `status` with the new version.
    pub async fn run(
        self,
        status: StatusCode,
        command: PolicyCommand,
        mut created: BTreeMap<&'static str, String>,
    ) -> Result<HttpResponse, Problem> {
        created.insert("team", self.team.as_str().to_owned());
        self.once(|| async {
            let w = self.issuer().policy(&self.team, command).await?;
            Ok(reply(status, &w, created, None))
        })
        .await
    }
}
