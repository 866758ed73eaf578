//! The read side answered from the projections: rollout lists, the approver inbox, the
//! decision log and the audit trail (read models), and one rollout's timeline, replay and
//! post-mortem (built from its stream).
//!
//! Every read accepts `min_position` (read-your-writes): a write answers with its global
//! position, and a read given that position waits (at most `--read-wait-ms`) until the read
//! models reflect it, answering 503 with `Retry-After` when they do not in time.
//!
//! Team scope (R11) is applied in every query: lists only hold the caller's teams' rows
//! (`*` = all), and a rollout outside them answers 404 exactly as one that does not exist.
//! The audit trail and the decision log are readable by every authenticated caller within
//! their teams: auditors need them, and the people who act on a rollout are entitled to
//! see who decided what on it. Nothing here writes, so R10 never refuses a read.

use std::collections::HashMap;

use actix_web::error::QueryPayloadError;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use rollgate_domain::{RolloutEvent, RolloutId, Team};
use rollgate_projections::{
    AuditFilter, DecisionFilter, InboxQuery, ProjectionError, RolloutFilter, TeamScope,
};
use rollgate_store::RecordedEvent;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::auth::Caller;
use crate::execute::load_rollout;
use crate::problem::Problem;
use crate::rollouts::{parse_limit, parse_rollout_id};
use crate::AppState;

/// Seconds a client is told to wait when the projections lag behind `min_position`.
pub const LAG_RETRY_AFTER_SECONDS: u64 = 1;

/// Rollout statuses, as the read models and `RolloutView` spell them.
const STATUSES: [&str; 7] = [
    "draft",
    "ready",
    "running",
    "paused",
    "rolled_back",
    "completed",
    "aborted",
];

/// Decision-log kinds.
const KINDS: [&str; 12] = {
    use rollgate_projections::models::kind::*;
    [
        APPROVAL,
        REJECTION,
        ADVANCE_OVERRIDE,
        DEVIATION_REQUESTED,
        DEVIATION_GRANTED,
        DEVIATION_DENIED,
        ROLLBACK,
        ABORT,
        DECISION,
        FREEZE_DECLARED,
        FREEZE_LIFTED,
        POLICY_PUBLISHED,
    ]
};

// ---------------------------------------------------------------------------------------
// Query parameters.

/// Maps a query string actix could not deserialize to a 422 naming the parameter when the
/// error names one (unknown, repeated or missing parameters).
pub fn query_problem(e: &QueryPayloadError) -> Problem {
    let message = match e {
        QueryPayloadError::Deserialize(inner) => inner.to_string(),
        other => other.to_string(),
    };
    let field = ["unknown field `", "duplicate field `", "missing field `"]
        .iter()
        .find_map(|prefix| {
            let rest = &message[message.find(prefix)? + prefix.len()..];
            Some(rest[..rest.find('`')?].to_owned())
        })
        .unwrap_or_else(|| "query".to_owned());
    let message = if message.starts_with("unknown field") {
        format!("unknown query parameter; {message}")
    } else {
        message
    };
    Problem::invalid_field(field, message)
}

/// `min_position`: an integer of at least 0.
pub fn parse_min_position(raw: Option<&str>) -> Result<Option<u64>, Problem> {
    raw.map(|s| {
        s.parse::<u64>()
            .map_err(|_| Problem::invalid_field("min_position", "must be an integer of at least 0"))
    })
    .transpose()
}

/// Waits until the read models reflect `min_position`; 503 with `Retry-After` when they
/// have not within the configured read wait.
pub async fn wait_for_projection(
    state: &AppState,
    min_position: Option<u64>,
) -> Result<(), Problem> {
    let Some(position) = min_position.filter(|p| *p > 0) else {
        return Ok(());
    };
    if state.projector.position() >= position
        || state.projector.wait_for(position, state.read_wait).await
    {
        return Ok(());
    }
    Err(Problem::unavailable(
        format!(
            "the read models have not reached position {position} yet (at {}); retry",
            state.projector.position()
        ),
        LAG_RETRY_AFTER_SECONDS,
    ))
}

fn parse_page_limit(raw: Option<&str>) -> Result<u32, Problem> {
    let limit = raw
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| Problem::invalid_field("limit", "must be between 1 and 1000"))
        })
        .transpose()?;
    Ok(parse_limit(limit)? as u32)
}

fn parse_time(name: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, Problem> {
    raw.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| Problem::invalid_field(name, "must be an RFC 3339 time"))
    })
    .transpose()
}

fn parse_uuid(name: &str, raw: Option<&str>) -> Result<Option<Uuid>, Problem> {
    raw.map(|s| Uuid::parse_str(s).map_err(|_| Problem::invalid_field(name, "must be a UUID")))
        .transpose()
}

fn parse_team(raw: Option<&str>) -> Result<Option<String>, Problem> {
    raw.map(|s| {
        Team::parse(s)
            .map(|t| t.as_str().to_owned())
            .map_err(|e| Problem::invalid_field("team", e.to_string()))
    })
    .transpose()
}

fn parse_one_of(
    name: &str,
    raw: Option<&str>,
    allowed: &[&str],
) -> Result<Option<String>, Problem> {
    raw.map(|s| {
        if allowed.contains(&s) {
            Ok(s.to_owned())
        } else {
            Err(Problem::invalid_field(
                name,
                format!("must be one of {}", allowed.join(", ")),
            ))
        }
    })
    .transpose()
}

fn parse_text(name: &str, raw: Option<&str>) -> Result<Option<String>, Problem> {
    raw.map(|s| {
        if s.is_empty() || s.len() > 256 {
            Err(Problem::invalid_field(name, "must be 1 to 256 characters"))
        } else {
            Ok(s.to_owned())
        }
    })
    .transpose()
}

/// Maps a read-model failure: bad cursors and limits are the client's, the rest is logged.
fn projection_problem(e: ProjectionError) -> Problem {
    match e {
        ProjectionError::InvalidCursor => {
            Problem::invalid_field("cursor", "not a cursor from this endpoint")
        }
        ProjectionError::InvalidLimit => {
            Problem::invalid_field("limit", "must be between 1 and 1000")
        }
        ProjectionError::Store(e) => e.into(),
        other => {
            tracing::error!(error = %other, "read model query failed");
            Problem::internal()
        }
    }
}

fn teams(caller: &Caller) -> TeamScope {
    caller.actor.teams.clone()
}

// ---------------------------------------------------------------------------------------
// Read models.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutsQuery {
    team: Option<String>,
    status: Option<String>,
    feature_key: Option<String>,
    stage: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
    min_position: Option<String>,
}

/// `GET /v1/rollouts`: rollout summaries of the caller's teams, oldest first.
pub async fn list_rollouts(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<RolloutsQuery>,
) -> Result<HttpResponse, Problem> {
    let q = query.into_inner();
    let limit = parse_page_limit(q.limit.as_deref())?;
    let min_position = parse_min_position(q.min_position.as_deref())?;
    let mut filter = RolloutFilter::new(teams(&caller));
    filter.team = parse_team(q.team.as_deref())?;
    filter.status = parse_one_of("status", q.status.as_deref(), &STATUSES)?;
    filter.feature_key = parse_text("feature_key", q.feature_key.as_deref())?;
    filter.stage = q
        .stage
        .as_deref()
        .map(|s| {
            s.parse::<u32>()
                .map_err(|_| Problem::invalid_field("stage", "must be an integer of at least 0"))
        })
        .transpose()?;
    wait_for_projection(&state, min_position).await?;
    let page = rollgate_projections::list_rollouts(
        &state.store.pool(),
        &filter,
        q.cursor.as_deref(),
        limit,
    )
    .await
    .map_err(projection_problem)?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    cursor: Option<String>,
    limit: Option<String>,
    min_position: Option<String>,
}

/// `GET /v1/approvals/inbox`: open advance requests the caller may decide.
pub async fn inbox(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, Problem> {
    let q = query.into_inner();
    let limit = parse_page_limit(q.limit.as_deref())?;
    let min_position = parse_min_position(q.min_position.as_deref())?;
    wait_for_projection(&state, min_position).await?;
    let who = InboxQuery {
        actor_id: caller.sub().to_owned(),
        roles: caller.actor.roles.clone(),
        teams: teams(&caller),
    };
    let page = rollgate_projections::inbox(&state.store.pool(), &who, q.cursor.as_deref(), limit)
        .await
        .map_err(projection_problem)?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionsQuery {
    team: Option<String>,
    rollout_id: Option<String>,
    kind: Option<String>,
    actor: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
    min_position: Option<String>,
}

/// `GET /v1/decisions`: the decision log of the caller's teams, oldest first.
pub async fn decisions(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<DecisionsQuery>,
) -> Result<HttpResponse, Problem> {
    let q = query.into_inner();
    let limit = parse_page_limit(q.limit.as_deref())?;
    let min_position = parse_min_position(q.min_position.as_deref())?;
    let mut filter = DecisionFilter::new(teams(&caller));
    filter.team = parse_team(q.team.as_deref())?;
    filter.rollout_id = parse_uuid("rollout_id", q.rollout_id.as_deref())?;
    filter.kind = parse_one_of("kind", q.kind.as_deref(), &KINDS)?;
    filter.actor = parse_text("actor", q.actor.as_deref())?;
    filter.from = parse_time("from", q.from.as_deref())?;
    filter.to = parse_time("to", q.to.as_deref())?;
    wait_for_projection(&state, min_position).await?;
    let page =
        rollgate_projections::decisions(&state.store.pool(), &filter, q.cursor.as_deref(), limit)
            .await
            .map_err(projection_problem)?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    team: Option<String>,
    rollout_id: Option<String>,
    event_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
    min_position: Option<String>,
}

/// `GET /v1/audit`: one entry per event of the caller's teams, in log order.
pub async fn audit(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, Problem> {
    let q = query.into_inner();
    let limit = parse_page_limit(q.limit.as_deref())?;
    let min_position = parse_min_position(q.min_position.as_deref())?;
    let mut filter = AuditFilter::new(teams(&caller));
    filter.actor = parse_text("actor", q.actor.as_deref())?;
    filter.team = parse_team(q.team.as_deref())?;
    filter.rollout_id = parse_uuid("rollout_id", q.rollout_id.as_deref())?;
    filter.event_type = parse_text("event_type", q.event_type.as_deref())?;
    filter.from = parse_time("from", q.from.as_deref())?;
    filter.to = parse_time("to", q.to.as_deref())?;
    wait_for_projection(&state, min_position).await?;
    let page =
        rollgate_projections::audit(&state.store.pool(), &filter, q.cursor.as_deref(), limit)
            .await
            .map_err(projection_problem)?;
    Ok(HttpResponse::Ok().json(page))
}

// ---------------------------------------------------------------------------------------
// One rollout's stream.

/// The rollout's recorded events, if it exists and is one of the caller's teams' (R11:
/// otherwise 404, the same as for an unknown id).
async fn visible_stream(
    state: &AppState,
    caller: &Caller,
    id: &RolloutId,
) -> Result<(Vec<RecordedEvent>, Vec<RolloutEvent>), Problem> {
    let (current, recorded, events) = load_rollout(&*state.store, id).await?;
    let rollout = current.rollout().ok_or_else(Problem::rollout_not_found)?;
    if !caller.may_see(&rollout.team) {
        return Err(Problem::rollout_not_found());
    }
    Ok((recorded, events))
}

/// A page cursor over a stream: the global position of the last item answered.
fn parse_position_cursor(raw: Option<&str>) -> Result<u64, Problem> {
    raw.map(|c| {
        c.parse::<u64>()
            .map_err(|_| Problem::invalid_field("cursor", "not a cursor from this endpoint"))
    })
    .transpose()
    .map(Option::unwrap_or_default)
}

/// The slice of `positions` (ascending) after `after`, at most `limit` long, and the cursor
/// of the next page.
fn window(positions: &[u64], after: u64, limit: usize) -> (usize, usize, Option<String>) {
    let start = positions.partition_point(|p| *p <= after);
    let end = (start + limit).min(positions.len());
    let next = (end < positions.len()).then(|| positions[end - 1].to_string());
    (start, end, next)
}

/// `GET /v1/rollouts/{id}/timeline`: the rollout's events with T+offsets from its start,
/// guardrail breaches and post-mortem annotations marked.
pub async fn timeline(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let q = query.into_inner();
    let limit = parse_page_limit(q.limit.as_deref())? as usize;
    let after = parse_position_cursor(q.cursor.as_deref())?;
    let min_position = parse_min_position(q.min_position.as_deref())?;
    wait_for_projection(&state, min_position).await?;
    let (recorded, events) = visible_stream(&state, &caller, &id).await?;
    let entries = rollgate_projections::timeline(&recorded);
    let positions: Vec<u64> = entries.iter().map(|e| e.position).collect();
    let (start, end, next) = window(&positions, after, limit);
    // Annotations carry their text: the post-mortem author's words belong on the timeline.
    let annotations: HashMap<u64, Value> = recorded
        .iter()
        .zip(&events)
        .filter_map(|(r, e)| match e {
            RolloutEvent::Annotated { about, text, .. } => {
                Some((r.position, json!({ "text": text, "about": about })))
            }
            _ => None,
        })
        .collect();
    let mut items = Vec::with_capacity(end - start);
    for entry in &entries[start..end] {
        let mut item = serde_json::to_value(entry).map_err(|_| Problem::internal())?;
        if let Some(a) = annotations.get(&entry.position) {
            item["annotation"] = a.clone();
        }
        items.push(item);
    }
    Ok(HttpResponse::Ok().json(json!({
        "rollout_id": id.to_string(),
        "items": items,
        "next_cursor": next,
    })))
}

/// `GET /v1/rollouts/{id}/replay`: the rollout's state after each of its events.
pub async fn replay(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let q = query.into_inner();
    let limit = parse_page_limit(q.limit.as_deref())? as usize;
    let after = parse_position_cursor(q.cursor.as_deref())?;
    let min_position = parse_min_position(q.min_position.as_deref())?;
    wait_for_projection(&state, min_position).await?;
    let (recorded, _) = visible_stream(&state, &caller, &id).await?;
    let positions: Vec<u64> = recorded.iter().map(|e| e.position).collect();
    let (start, end, next) = window(&positions, after, limit);
    // A step's state depends only on the events before it: replay the prefix only.
    let steps = rollgate_projections::replay(&recorded[..end]);
    Ok(HttpResponse::Ok().json(json!({
        "rollout_id": id.to_string(),
        "items": &steps[start..end],
        "next_cursor": next,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostmortemQuery {
    min_position: Option<String>,
}

/// `GET /v1/rollouts/{id}/postmortem`: the post-mortem report, in Markdown.
pub async fn postmortem(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<PostmortemQuery>,
) -> Result<HttpResponse, Problem> {
    let id = parse_rollout_id(&path)?;
    let min_position = parse_min_position(query.min_position.as_deref())?;
    wait_for_projection(&state, min_position).await?;
    let (recorded, _) = visible_stream(&state, &caller, &id).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/markdown; charset=utf-8")
        .body(rollgate_projections::postmortem_markdown(&recorded)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_page_without_gaps() {
        let p = [3, 5, 9, 12];
        assert_eq!(window(&p, 0, 2), (0, 2, Some("5".to_owned())));
        assert_eq!(window(&p, 5, 2), (2, 4, None));
        assert_eq!(window(&p, 4, 10), (1, 4, None));
        assert_eq!(window(&p, 12, 10), (4, 4, None));
    }

    #[test]
    fn min_position_must_be_a_non_negative_integer() {
        assert_eq!(parse_min_position(None).unwrap(), None);
        assert_eq!(parse_min_position(Some("7")).unwrap(), Some(7));
        for bad in ["-1", "x", "1.5", ""] {
            let p = parse_min_position(Some(bad)).unwrap_err();
            assert_eq!(p.errors[0].field, "min_position");
        }
    }
}
