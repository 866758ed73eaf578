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
//! any without a team): the catch-up reads filter by team in the database, and live events
//! come from the instance's shared tail ([`crate::live`]), which reads each commit once for
//! every stream. A comment line is written every [`KEEP_ALIVE`] so proxies keep the
//! connection open and a vanished client is noticed.
//!
//! A stream ends when its token expires (the client reconnects with a fresh token and
//! `Last-Event-ID`), when the client disconnects, or when the store closes. Streams are
//! limited per token subject and in total; beyond either, 429 with `Retry-After`. A stream
//! whose client has gone gives its place back when the server notices, when a write fails
//! (within two keep-alive intervals).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use rollgate_domain::{Team, TeamScope};
use rollgate_store::{EventStore, RecordedEvent, StoreError};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::http::caller::Caller;
use crate::http::problem::Problem;
use crate::http::query::{Count, Query};
use crate::live::{Permit, PAGE, RETRY_AFTER_SECONDS};
use crate::state::AppState;
use crate::views::EventView;

/// How often an idle stream writes a comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

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
    let permit = state
        .live
        .admit(caller.sub())
        .map_err(|refused| Problem::too_many_requests(refused.to_string(), RETRY_AFTER_SECONDS))?;
    // Subscribe before reading the head: whatever commits in between is in the broadcast.
    let live = state.live.subscribe();
    let after = match resume.or(query.from.as_ref().map(|c| c.0)) {
        Some(p) => p,
        None => state.store.head().await?.position,
    };
    let remaining = caller.expires_at - state.clock.now().timestamp();
    let deadline = Instant::now() + Duration::from_secs(remaining.max(0) as u64);
    let body = event_stream(Tail {
        store: state.store.clone(),
        teams: caller.actor.teams.clone(),
        cursor: after,
        pending: VecDeque::new(),
        live,
        phase: Phase::Hello,
        deadline,
        quiet_since: Instant::now(),
        _permit: permit,
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The `retry:` line is still to be written.
    Hello,
    /// Reading from the database (at the start, and after falling behind the broadcast).
    CatchUp,
    /// Taking events from the shared tail.
    Live,
    /// The token has expired: the closing comment is written, then the stream ends.
    Expired,
    Done,
}

/// One stream's state.
struct Tail {
    store: Arc<dyn EventStore>,
    teams: TeamScope,
    /// Every event at or before this position has been sent or was not for this caller.
    cursor: u64,
    pending: VecDeque<RecordedEvent>,
    live: broadcast::Receiver<Arc<RecordedEvent>>,
    phase: Phase,
    /// The token's expiry.
    deadline: Instant,
    /// When the stream last wrote anything (for the keep-alive comment).
    quiet_since: Instant,
    _permit: Permit,
}

impl Tail {
    /// A page of this caller's events after the cursor, filtered in the database.
    async fn read_page(&self) -> Result<Vec<RecordedEvent>, StoreError> {
        match &self.teams {
            TeamScope::All => self.store.read_all(self.cursor, PAGE).await,
            TeamScope::Teams(teams) => {
                let names: Vec<String> = teams.iter().map(|t| t.as_str().to_owned()).collect();
                self.store
                    .read_all_of_teams(self.cursor, PAGE, &names)
                    .await
            }
        }
    }

    /// The next chunk of the body, `None` when the stream ends.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.phase != Phase::Done && Instant::now() >= self.deadline {
                self.phase = Phase::Expired;
            }
            match self.phase {
                Phase::Done => return None,
                Phase::Expired => {
                    self.phase = Phase::Done;
                    return Some(Bytes::from_static(
                        b": the token has expired; reconnect with a new token and Last-Event-ID\n\n",
                    ));
                }
                Phase::Hello => {
                    self.phase = Phase::CatchUp;
                    return Some(Bytes::from(format!(
                        "retry: {RETRY_MS}\n: streaming events after position {}\n\n",
                        self.cursor
                    )));
                }
                Phase::CatchUp => {
                    if let Some(e) = self.pending.pop_front() {
                        self.cursor = e.position;
                        return Some(frame(&e));
                    }
                    match self.read_page().await {
                        Ok(page) if !page.is_empty() => self.pending.extend(page),
                        Ok(_) => self.phase = Phase::Live,
                        Err(e) => {
                            tracing::warn!(error = %e, "event stream ends: the store failed");
                            return None;
                        }
                    }
                }
                Phase::Live => {
                    let keep_alive = self.quiet_since + KEEP_ALIVE;
                    tokio::select! {
                        received = self.live.recv() => match received {
                            Ok(e) if e.position > self.cursor => {
                                self.cursor = e.position;
                                if visible(&self.teams, &e) {
                                    return Some(frame(&e));
                                }
                            }
                            // Already sent while catching up.
                            Ok(_) => {}
                            Err(broadcast::error::RecvError::Lagged(_)) => {
                                self.phase = Phase::CatchUp;
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                        _ = tokio::time::sleep_until(keep_alive) => {
                            return Some(Bytes::from_static(b": keep-alive\n\n"));
                        }
                        _ = tokio::time::sleep_until(self.deadline) => {
                            self.phase = Phase::Expired;
                        }
                    }
                }
            }
        }
    }
}

/// The SSE body.
fn event_stream(
    tail: Tail,
) -> impl futures::Stream<Item = Result<Bytes, actix_web::Error>> + 'static {
    futures::stream::unfold(tail, |mut t| async move {
        let chunk = t.next_chunk().await?;
        t.quiet_since = Instant::now();
        Some((Ok(chunk), t))
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
