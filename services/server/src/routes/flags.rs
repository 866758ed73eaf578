//! `GET /v1/flags/flagd.json?team=T`: the team's flagd flag file (one flag per rollout at
//! its current exposure), with `ETag` / `If-None-Match` for flagd's HTTP sync.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use rollgate_domain::flagd::flag_file;
use rollgate_domain::{RolloutId, RolloutState, Team};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::http::caller::Caller;
use crate::http::problem::Problem;
use crate::http::query::Query;
use crate::state::AppState;

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
) -> Result<HttpResponse, Problem> {
    let team = Team::parse(&q.team).map_err(|e| Problem::invalid_field("team", e.message))?;
    if !caller.may_see(&team) {
        return Err(Problem::not_found("team not found").with_rule("R11"));
    }
    caller.require_some_role("read a gate")?;
    let pool = state.store.pool();
    let mut filter = rollgate_projections::RolloutFilter::new(caller.actor.teams.clone());
    filter.team = Some(team.as_str().to_owned());
    let mut states: Vec<RolloutState> = Vec::new();
    let mut cursor: Option<String> = None;
    // bounded: at most 100 pages of 1000 rollouts
    for _ in 0..100 {
        let page =
            rollgate_projections::list_rollouts(&pool, &filter, cursor.as_deref(), 1000).await?;
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
