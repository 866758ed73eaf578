//! Governance admin endpoints: versioned team policies and freeze windows.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use rollgate_domain::{FreezeId, PolicyCommand, Role, Team};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::Caller;
use crate::body::{Json, OptionalJson};
use crate::execute::{policy_command, Call, RequestMeta};
use crate::idempotency::Reply;
use crate::problem::Problem;
use crate::rollouts::NoInput;
use crate::AppState;

fn parse_team(raw: &str) -> Result<Team, Problem> {
    Team::parse(raw).map_err(|e| Problem::invalid_field("team", e.to_string()))
}

/// R11 for policies: another team's policy is answered as not found.
fn check_team(caller: &Caller, team: &Team) -> Result<(), Problem> {
    if caller.may_see(team) {
        Ok(())
    } else {
        Err(Problem::not_found("team not found").with_rule("R11"))
    }
}

/// Runs a policy command (once per Idempotency-Key) and answers with the new version.
async fn run(
    call: Call<'_>,
    team: Team,
    status: StatusCode,
    command: PolicyCommand,
    extra: Value,
) -> Result<HttpResponse, Problem> {
    check_team(call.caller, &team)?;
    let meta = RequestMeta::of(call.req);
    call.once(|| async {
        let w = policy_command(call.state, call.caller, &meta, &team, command).await?;
        let mut body = w.body(extra);
        body["team"] = json!(team.as_str());
        Ok(Reply {
            status,
            etag: Some(w.etag()),
            location: None,
            body,
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyBody {
    approval_validity_seconds: i64,
    #[serde(default = "default_granters")]
    deviation_granter_roles: Vec<String>,
}

fn default_granters() -> Vec<String> {
    vec!["governance_admin".to_owned()]
}

pub async fn publish(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<PolicyBody>,
) -> Result<HttpResponse, Problem> {
    let team = parse_team(&path)?;
    let mut roles = BTreeSet::new();
    for (i, r) in body.value.deviation_granter_roles.iter().enumerate() {
        roles.insert(Role::parse(r).map_err(|e| {
            Problem::invalid_field(format!("deviation_granter_roles[{i}]"), e.to_string())
        })?);
    }
    let command = PolicyCommand::Publish {
        approval_validity_seconds: body.value.approval_validity_seconds,
        deviation_granter_roles: roles,
    };
    run(
        Call::new(&state, &caller, &req, &body.raw),
        team,
        StatusCode::OK,
        command,
        json!({}),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeBody {
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    reason: String,
}

pub async fn declare_freeze(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    body: Json<FreezeBody>,
) -> Result<HttpResponse, Problem> {
    let team = parse_team(&path)?;
    let freeze_id = FreezeId::new(Uuid::new_v4());
    let command = PolicyCommand::DeclareFreeze {
        freeze_id,
        starts_at: body.value.starts_at,
        ends_at: body.value.ends_at,
        reason: body.value.reason,
    };
    let extra = json!({ "freeze_id": freeze_id.to_string() });
    run(
        Call::new(&state, &caller, &req, &body.raw),
        team,
        StatusCode::CREATED,
        command,
        extra,
    )
    .await
}

pub async fn lift_freeze(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: OptionalJson<NoInput>,
) -> Result<HttpResponse, Problem> {
    let (team, fid) = path.into_inner();
    let team = parse_team(&team)?;
    let freeze_id = FreezeId::parse(&fid).map_err(|_| Problem::not_found("freeze not found"))?;
    let command = PolicyCommand::LiftFreeze { freeze_id };
    run(
        Call::new(&state, &caller, &req, &body.raw),
        team,
        StatusCode::OK,
        command,
        json!({}),
    )
    .await
}
