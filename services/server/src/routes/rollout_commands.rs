//! Every governance action on one rollout: each handler builds its command from the body
//! and hands it to [`RolloutWrite::run`] (team check, idempotency, If-Match, decide, append,
//! reply).

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use rollgate_domain::{
    AnnotationId, CreateRolloutSpec, DecisionId, DeviationId, NoteAudience, PlanSpec, Reading,
    RequestId, RolloutCommand, RolloutId, Rule, StageIndex,
};
use serde::Deserialize;

use crate::http::extract::{RolloutWrite, Write};
use crate::http::problem::Problem;

type Answer = Result<HttpResponse, Problem>;

/// What a command created, named in its reply.
fn created(name: &'static str, id: impl ToString) -> BTreeMap<&'static str, String> {
    BTreeMap::from([(name, id.to_string())])
}

fn field<T, E: std::fmt::Display>(r: Result<T, E>, name: &str) -> Result<T, Problem> {
    r.map_err(|e| Problem::invalid_field(name, e.to_string()))
}

pub async fn create(w: Write) -> Answer {
    let id = RolloutId::new(w.new_id("rollout"));
    let command = w
        .body::<CreateRolloutSpec>()?
        .parse(id)
        .map_err(Problem::invalid)?;
    if let RolloutCommand::Create {
        plan, feature_key, ..
    } = &command
    {
        crate::evaluator::check_queries(&w.state, plan, feature_key.as_str()).await?;
    }
    w.create(id, command).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviseBody {
    plan: PlanSpec,
}

pub async fn revise_plan(w: RolloutWrite) -> Answer {
    let plan =
        rollgate_domain::Plan::parse(w.body::<ReviseBody>()?.plan).map_err(Problem::invalid)?;
    let (current, _) = w.state.cache.rollout(&*w.state.store, &w.id).await?;
    if let Some(r) = current.rollout() {
        crate::evaluator::check_queries(&w.state, &plan, r.feature_key.as_str()).await?;
    }
    w.run(StatusCode::OK, RolloutCommand::RevisePlan { plan })
        .await
}

pub async fn sign_off(w: RolloutWrite) -> Answer {
    w.no_input()?;
    let item_key = w.path("item").to_owned();
    w.run(
        StatusCode::OK,
        RolloutCommand::SignOffReadiness { item_key },
    )
    .await
}

pub async fn start(w: RolloutWrite) -> Answer {
    w.no_input()?;
    w.run(StatusCode::OK, RolloutCommand::Start).await
}

pub async fn resume(w: RolloutWrite) -> Answer {
    w.no_input()?;
    w.run(StatusCode::OK, RolloutCommand::Resume).await
}

pub async fn complete(w: RolloutWrite) -> Answer {
    w.no_input()?;
    w.run(StatusCode::OK, RolloutCommand::Complete).await
}

pub async fn request_advance(w: RolloutWrite) -> Answer {
    w.no_input()?;
    let request_id = RequestId::new(w.new_id("request"));
    let command = RolloutCommand::RequestAdvance { request_id };
    w.run_with(
        StatusCode::CREATED,
        command,
        created("request_id", request_id),
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

pub async fn decide_request(w: RolloutWrite) -> Answer {
    let request_id = w.path_id("rid", RequestId::parse, "advance request")?;
    let ApprovalBody { decision, comment } = w.body()?;
    let command = match decision {
        ApprovalDecision::Approve => RolloutCommand::Approve {
            request_id,
            comment,
        },
        ApprovalDecision::Reject => RolloutCommand::Reject {
            request_id,
            comment: comment.unwrap_or_default(),
        },
    };
    w.run(StatusCode::CREATED, command).await
}

pub async fn withdraw(w: RolloutWrite) -> Answer {
    let request_id = w.path_id("rid", RequestId::parse, "advance request")?;
    w.no_input()?;
    w.run(
        StatusCode::OK,
        RolloutCommand::WithdrawRequest { request_id },
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

pub async fn advance(w: RolloutWrite) -> Answer {
    let b: AdvanceBody = w.body()?;
    let command = RolloutCommand::Advance {
        request_id: field(RequestId::parse(&b.request_id), "request_id")?,
        inconclusive_override: b.inconclusive_override,
    };
    w.run(StatusCode::OK, command).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    reason: String,
}

pub async fn pause(w: RolloutWrite) -> Answer {
    let ReasonBody { reason } = w.body()?;
    w.run(StatusCode::OK, RolloutCommand::Pause { reason })
        .await
}

pub async fn abort(w: RolloutWrite) -> Answer {
    let ReasonBody { reason } = w.body()?;
    w.run(StatusCode::OK, RolloutCommand::Abort { reason })
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

pub async fn rollback(w: RolloutWrite) -> Answer {
    let RollbackBody { reason, to_stage } = w.body()?;
    let to_stage = to_stage
        .map(|s| field(StageIndex::parse(s), "to_stage"))
        .transpose()?;
    w.run(
        StatusCode::OK,
        RolloutCommand::Rollback { to_stage, reason },
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingsBody {
    readings: Vec<Reading>,
}

pub async fn metrics(w: RolloutWrite) -> Answer {
    let ReadingsBody { readings } = w.body()?;
    if readings.is_empty() {
        return Err(Problem::invalid_field(
            "readings",
            "at least one reading is needed",
        ));
    }
    w.run(StatusCode::OK, RolloutCommand::RecordReadings { readings })
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviationBody {
    rules: Vec<String>,
    justification: String,
    expires_at: DateTime<Utc>,
}

pub async fn request_deviation(w: RolloutWrite) -> Answer {
    let b: DeviationBody = w.body()?;
    let rules = b
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| field(Rule::parse(r), &format!("rules[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let deviation_id = DeviationId::new(w.new_id("deviation"));
    let command = RolloutCommand::RequestDeviation {
        deviation_id,
        rules,
        justification: b.justification,
        expires_at: b.expires_at,
    };
    w.run_with(
        StatusCode::CREATED,
        command,
        created("deviation_id", deviation_id),
    )
    .await
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

pub async fn record_decision(w: RolloutWrite) -> Answer {
    let b: DecisionBody = w.body()?;
    let decision_id = DecisionId::new(w.new_id("decision"));
    let command = RolloutCommand::RecordDecision {
        decision_id,
        title: b.title,
        rationale: b.rationale,
        alternatives: b.alternatives,
        outcome: b.outcome,
    };
    w.run_with(
        StatusCode::CREATED,
        command,
        created("decision_id", decision_id),
    )
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteBody {
    audience: NoteAudience,
    text: String,
}

pub async fn add_note(w: RolloutWrite) -> Answer {
    let NoteBody { audience, text } = w.body()?;
    w.run(
        StatusCode::CREATED,
        RolloutCommand::AddNote { audience, text },
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

pub async fn annotate(w: RolloutWrite) -> Answer {
    let AnnotationBody { text, about } = w.body()?;
    let annotation_id = AnnotationId::new(w.new_id("annotation"));
    let command = RolloutCommand::Annotate {
        annotation_id,
        about,
        text,
    };
    w.run_with(
        StatusCode::CREATED,
        command,
        created("annotation_id", annotation_id),
    )
    .await
}
