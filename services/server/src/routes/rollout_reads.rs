//! Reads of one rollout, answered from its stream: the rollout now or `as_of` a position or
//! time, its events, its timeline, its step-by-step replay and its post-mortem. R11 first:
//! another team's rollout answers exactly as an unknown id.

use std::collections::HashMap;

use actix_web::HttpResponse;
use rollgate_domain::{RolloutEvent, RolloutId};
use rollgate_store::{read_whole_stream, RecordedEvent};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::command::cache::AsOf;
use crate::events::{decode_rollout, rollout_stream};
use crate::http::consistency::{wait_for_log, wait_for_projection};
use crate::http::extract::RolloutRead;
use crate::http::problem::Problem;
use crate::http::query::{self, AsOfParam, Count, Limit, PageQuery, Query, StreamCursor};
use crate::state::AppState;
use crate::views::{EventView, ItemsPage, RolloutView};

type Answer = Result<HttpResponse, Problem>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsOfQuery {
    as_of: Option<AsOfParam>,
    min_position: Option<Count>,
}

/// `GET /v1/rollouts/{id}`: the rollout now, or `as_of` a position or time (by replay from
/// the nearest checkpoint of the stream).
pub async fn get(r: RolloutRead, q: Query<AsOfQuery>) -> Answer {
    let RolloutRead { state, id, .. } = r;
    wait_for_log(&state, q.min_position.as_ref()).await?;
    let as_of = q.as_of.as_ref().map_or(AsOf::Position(u64::MAX), |a| a.0);
    // R11 was judged on the rollout as it is now, so a time before it existed leaks nothing.
    let (_, then, as_of_position) = state.cache.rollout_as_of(&*state.store, &id, as_of).await?;
    let Some(r) = then.rollout() else {
        return Err(Problem::not_found(
            "the rollout did not exist at that point",
        ));
    };
    Ok(HttpResponse::Ok()
        .insert_header(("ETag", format!("\"{}\"", r.version)))
        .json(RolloutView::new(r, as_of_position)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    cursor: Option<StreamCursor>,
    limit: Option<Limit>,
    min_position: Option<Count>,
}

/// `GET /v1/rollouts/{id}/events`: the stream, upcast, in version order.
pub async fn events(r: RolloutRead, q: Query<EventsQuery>) -> Answer {
    let RolloutRead { state, id, .. } = r;
    let limit = query::limit(&q.limit) as usize;
    wait_for_log(&state, q.min_position.as_ref()).await?;
    let after = q.cursor.as_ref().map_or(0, |c| c.0);
    let page = state
        .store
        .read_stream(&rollout_stream(&id), after + 1, limit + 1)
        .await?;
    let decoded = page
        .iter()
        .take(limit)
        .map(decode_rollout)
        .collect::<Result<Vec<_>, _>>()?;
    let items: Vec<EventView> = page
        .iter()
        .zip(&decoded)
        .map(|(e, d)| EventView::in_rollout(e, d))
        .collect();
    let next = (page.len() > limit)
        .then(|| page.get(limit - 1).map(|e| e.version.to_string()))
        .flatten();
    Ok(HttpResponse::Ok().json(ItemsPage {
        rollout_id: None,
        items,
        next_cursor: next,
    }))
}

/// The rollout's recorded and decoded events.
async fn whole_stream(
    state: &AppState,
    id: &RolloutId,
) -> Result<(Vec<RecordedEvent>, Vec<RolloutEvent>), Problem> {
    let recorded = read_whole_stream(&*state.store, &rollout_stream(id)).await?;
    let events = recorded
        .iter()
        .map(decode_rollout)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((recorded, events))
}

/// The slice of `positions` (ascending) after `after`, at most `limit` long, and the cursor
/// of the next page.
fn window(positions: &[u64], after: u64, limit: usize) -> (usize, usize, Option<String>) {
    let start = positions.partition_point(|p| *p <= after);
    let end = (start + limit).min(positions.len());
    let next = (end < positions.len()).then(|| positions[end - 1].to_string());
    (start, end, next)
}

/// A stream page's bounds from the query: (after, limit).
fn bounds(q: &PageQuery) -> Result<(u64, usize), Problem> {
    let after = match &q.cursor {
        None => 0,
        Some(c) => c
            .parse()
            .map_err(|_| Problem::invalid_field("cursor", "not a cursor from this endpoint"))?,
    };
    Ok((after, query::limit(&q.limit) as usize))
}

/// `GET /v1/rollouts/{id}/timeline`: the rollout's events with T+offsets from its start,
/// guardrail breaches and post-mortem annotations marked.
pub async fn timeline(r: RolloutRead, q: Query<PageQuery>) -> Answer {
    let RolloutRead { state, id, .. } = r;
    let (after, limit) = bounds(&q)?;
    wait_for_projection(&state, q.min_position.as_ref()).await?;
    let (recorded, events) = whole_stream(&state, &id).await?;
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
    Ok(HttpResponse::Ok().json(ItemsPage {
        rollout_id: Some(id.to_string()),
        items,
        next_cursor: next,
    }))
}

/// `GET /v1/rollouts/{id}/replay`: the rollout's state after each of its events.
pub async fn replay(r: RolloutRead, q: Query<PageQuery>) -> Answer {
    let RolloutRead { state, id, .. } = r;
    let (after, limit) = bounds(&q)?;
    wait_for_projection(&state, q.min_position.as_ref()).await?;
    let (recorded, _) = whole_stream(&state, &id).await?;
    let positions: Vec<u64> = recorded.iter().map(|e| e.position).collect();
    let (start, end, next) = window(&positions, after, limit);
    // A step's state depends only on the events before it: replay the prefix only.
    let steps = rollgate_projections::replay(&recorded[..end]);
    Ok(HttpResponse::Ok().json(ItemsPage {
        rollout_id: Some(id.to_string()),
        items: &steps[start..end],
        next_cursor: next,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostmortemQuery {
    min_position: Option<Count>,
}

/// `GET /v1/rollouts/{id}/postmortem`: the post-mortem report, in Markdown.
pub async fn postmortem(r: RolloutRead, q: Query<PostmortemQuery>) -> Answer {
    wait_for_projection(&r.state, q.min_position.as_ref()).await?;
    let (recorded, _) = whole_stream(&r.state, &r.id).await?;
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
}
