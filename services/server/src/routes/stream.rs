//! `GET /v1/events/stream`: the global log as Server-Sent Events.
//!
//! The stream starts after a position: the `Last-Event-ID` header when present (a client
//! resuming after a disconnect; it wins over the query because an `EventSource` reconnects
//! to the same URL), else `?from=N` (events with position > N, so `from=0` replays the whole
//! log), else the current head (only new events). Each event is
//!
//! ```text
//! id: <position>
//! event: <event type>
//! data: {"position":…,"stream":…,"version":…,"id":…,"type":…,"schema_version":…,"payload":…,"metadata":…,"recorded_at":…}
//! ```
//!
//! Payloads are upcast to their current schema version (as every read is). Only events of
//! the caller's teams are sent (`metadata.team`; a `*` caller sees every event, including
//! any without a team). The stream reads the log a page at a time, sleeps on the store's
//! commit signal when it has caught up, and writes a comment line every
//! [`KEEP_ALIVE`] so proxies keep the connection open and a vanished client is noticed; it
//! ends when the client disconnects (or the store closes).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use rollgate_domain::{Team, TeamScope};
use rollgate_store::{EventStore, RecordedEvent};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::http::caller::Caller;
use crate::http::problem::Problem;
use crate::http::query::{Count, Query};
use crate::state::AppState;
use crate::views::EventView;

/// How often an idle stream writes a comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Events read from the store at a time.
const PAGE: usize = 256;

/// How long a client waits before reconnecting (the SSE `retry:` field), in milliseconds.
const RETRY_MS: u64 = 2000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    pub from: Option<Count>,
}

/// `GET /v1/events/stream`.
pub async fn events(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    query: Query<StreamQuery>,
) -> Result<HttpResponse, Problem> {
    let resume = match req.headers().get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Problem::invalid_field(
                        "Last-Event-ID",
                        "must be the id (a position) of an event of this stream",
                    )
                })?,
        ),
    };
    // Subscribe before reading the head: a commit in between still wakes the stream.
    let signal = state.store.subscribe();
    let after = match resume.or(query.from.as_ref().map(|c| c.0)) {
        Some(p) => p,
        None => state.store.head().await?.position,
    };
    let body = event_stream(
        state.store.clone(),
        caller.actor.teams.clone(),
        after,
        signal,
    );
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

struct Tail {
    store: Arc<dyn EventStore>,
    teams: TeamScope,
    after: u64,
    pending: VecDeque<RecordedEvent>,
    signal: watch::Receiver<u64>,
    started: bool,
}

/// The SSE body: events after `after` that `teams` may see, then new ones as they commit.
pub fn event_stream(
    store: Arc<dyn EventStore>,
    teams: TeamScope,
    after: u64,
    signal: watch::Receiver<u64>,
) -> impl futures::Stream<Item = Result<Bytes, actix_web::Error>> + 'static {
    let tail = Tail {
        store,
        teams,
        after,
        pending: VecDeque::new(),
        signal,
        started: false,
    };
    futures::stream::unfold(tail, |mut t| async move {
        if !t.started {
            t.started = true;
            let hello = format!(
                "retry: {RETRY_MS}\n: streaming events after position {}\n\n",
                t.after
            );
            return Some((Ok(Bytes::from(hello)), t));
        }
        loop {
            while let Some(e) = t.pending.pop_front() {
                t.after = e.position;
                if visible(&t.teams, &e) {
                    return Some((Ok(frame(&e)), t));
                }
            }
            // Mark the signal seen before reading, so a commit after the read wakes us.
            t.signal.borrow_and_update();
            match t.store.read_all(t.after, PAGE).await {
                Err(e) => {
                    tracing::warn!(error = %e, "event stream ends: the store failed");
                    return None;
                }
                Ok(page) if !page.is_empty() => {
                    t.pending.extend(page);
                    continue;
                }
                Ok(_) => {}
            }
            tokio::select! {
                changed = t.signal.changed() => {
                    if changed.is_err() {
                        // The store is closing.
                        return None;
                    }
                }
                _ = tokio::time::sleep(KEEP_ALIVE) => {
                    return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), t));
                }
            }
        }
    })
}

/// Whether a caller of `teams` may see `e` (R11): by the event's `metadata.team`.
fn visible(teams: &TeamScope, e: &RecordedEvent) -> bool {
    match teams {
        TeamScope::All => true,
        scoped => e
            .metadata
            .get("team")
            .and_then(Value::as_str)
            .and_then(|t| Team::parse(t).ok())
            .is_some_and(|t| scoped.includes(&t)),
    }
}

fn frame(e: &RecordedEvent) -> Bytes {
    let data = serde_json::to_string(&EventView::global(e)).unwrap_or_default();
    // Compact JSON has no raw newlines, so one `data:` line carries it; the event type is an
    // identifier, but any line break in it is dropped all the same.
    let event_type: String = e
        .event_type
        .chars()
        .filter(|c| *c != '\n' && *c != '\r')
        .collect();
    Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        e.position, event_type, data
    ))
}
