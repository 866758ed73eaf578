//! Governance admin endpoints: versioned team policies and freeze windows. The team is
//! checked by [`PolicyWrite`] before anything else (R11).

use std::collections::{BTreeMap, BTreeSet};

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use rollgate_domain::{FreezeId, PolicyCommand, Role};
use serde::Deserialize;

use crate::http::extract::PolicyWrite;
use crate::http::problem::Problem;

type Answer = Result<HttpResponse, Problem>;

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

pub async fn publish(w: PolicyWrite) -> Answer {
    let b: PolicyBody = w.body()?;
    let mut roles = BTreeSet::new();
    for (i, r) in b.deviation_granter_roles.iter().enumerate() {
        roles.insert(Role::parse(r).map_err(|e| {
            Problem::invalid_field(format!("deviation_granter_roles[{i}]"), e.to_string())
        })?);
    }
    let command = PolicyCommand::Publish {
        approval_validity_seconds: b.approval_validity_seconds,
        deviation_granter_roles: roles,
    };
    w.run(StatusCode::OK, command, BTreeMap::new()).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreezeBody {
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    reason: String,
}

pub async fn declare_freeze(w: PolicyWrite) -> Answer {
    let FreezeBody {
        starts_at,
        ends_at,
        reason,
    } = w.body()?;
    let freeze_id = FreezeId::new(w.new_id("freeze"));
    let command = PolicyCommand::DeclareFreeze {
        freeze_id,
        starts_at,
        ends_at,
        reason,
    };
    let created = BTreeMap::from([("freeze_id", freeze_id.to_string())]);
    w.run(StatusCode::CREATED, command, created).await
}

pub async fn lift_freeze(w: PolicyWrite) -> Answer {
    let freeze_id =
        FreezeId::parse(w.path("fid")).map_err(|_| Problem::not_found("freeze not found"))?;
    w.no_input()?;
    w.run(
        StatusCode::OK,
        PolicyCommand::LiftFreeze { freeze_id },
        BTreeMap::new(),
    )
    .await
}
