//! `POST /v1/deviations/{did}/decision`: grant or deny a deviation, on the rollout it
//! belongs to (found by [`DeviationWrite`]: roles first, then an indexed look-up).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use rollgate_domain::RolloutCommand;
use serde::Deserialize;

use crate::http::extract::DeviationWrite;
use crate::http::problem::Problem;

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

pub async fn decide(d: DeviationWrite) -> Result<HttpResponse, Problem> {
    let DeviationDecisionBody { decision, comment } = d.rollout.body()?;
    let deviation_id = d.deviation_id;
    let command = match decision {
        DeviationVerdict::Grant => RolloutCommand::GrantDeviation {
            deviation_id,
            comment,
        },
        DeviationVerdict::Deny => RolloutCommand::DenyDeviation {
            deviation_id,
            comment,
        },
    };
    let created = BTreeMap::from([("deviation_id", deviation_id.to_string())]);
    d.rollout.run_with(StatusCode::OK, command, created).await
}
