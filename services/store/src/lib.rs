//! rollgate's append-only event store.
//!
//! Every change in rollgate is an event appended here; everything else is a projection of
//! this log. Two backends implement one trait, [`EventStore`]: PostgreSQL for production and
//! SQLite as the embedded default. Both keep the same guarantees (see `docs/ARCHITECTURE.md`):
//! atomic appends with optimistic concurrency (optionally conditioned on a second stream's
//! version), idempotency by event id, one gap-free global position in commit order, durable
//! acknowledgement, immutability enforced by triggers, a SHA-256 hash chain, and
//! schema-versioned payloads.
//!
//! The store does not own the schema: the migrations live in `migrations/` at the top of the
//! repository and are applied by the `rollgate` binary.

mod batch;
pub mod chain;
pub mod clock;
mod error;
mod postgres;
pub mod sql;
mod sqlite;
mod types;
pub mod verify;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::watch;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::StoreError;
pub use postgres::{pool as postgres_pool, PgStore};
pub use sqlite::{pool as sqlite_pool, SqliteStore};
pub use types::{
    AppendObserver, AppendOutcome, EventData, ExpectedVersion, FailPoints, Head, RecordedEvent,
    StoreOptions, StreamCondition,
};
pub use verify::{verify, VerifyReport};

/// The database behind a store, for components (projections, idempotency records) that must
/// write their own tables in the same database, sometimes in the same transaction.
#[derive(Clone, Debug)]
pub enum DatabasePool {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

/// The event store: one trait, two backends, one conformance suite.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically if the stream is at `expected`.
    ///
    /// Re-appending events whose ids are already stored (with identical content) returns the
    /// original outcome and writes nothing.
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendOutcome, StoreError>;

    /// [`EventStore::append`] with an optional read-condition on a second stream, checked in
    /// the same transaction as the append: with `Some(c)`, the events are written only if
    /// `c.stream` is at `c.version` at commit, else the append fails with
    /// [`StoreError::ConditionFailed`] and writes nothing. In a group-committed batch the
    /// condition sees the requests committed before it in the same batch, and a failed
    /// condition fails only its own request. A retried append whose events are already
    /// stored answers the original outcome, whatever the condition.
    ///
    /// Both backends implement it; a wrapper that only forwards `append` answers
    /// [`StoreError::InvalidAppend`] for a condition rather than append without checking it.
    async fn append_with(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<StreamCondition>,
    ) -> Result<AppendOutcome, StoreError> {
        match condition {
            None => self.append(stream, expected, events).await,
            Some(c) => Err(StoreError::InvalidAppend(format!(
                "this store cannot check a condition on stream {}",
                c.stream
            ))),
        }
    }

    /// Events of `stream` with version >= `from_version` (versions start at 1), at most `limit`.
    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Events of the global log with position > `after_position`, in position order, at most `limit`.
    async fn read_all(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// [`EventStore::read_all`] limited to events whose `metadata.team` is one of `teams`
    /// (the filter runs in the database, so a caller never reads other teams' events).
    /// Events without a team are left out.
    async fn read_all_of_teams(
        &self,
        after_position: u64,
        limit: usize,
        teams: &[String],
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The current version of a stream (0 when it does not exist).
    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError>;

    /// The last position and its chain hash.
    async fn head(&self) -> Result<Head, StoreError>;

    /// A wake-up signal carrying the highest committed position this process knows of.
    /// PostgreSQL also relays commits made by other processes (LISTEN/NOTIFY).
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The pool, for tables that live beside the log.
    fn pool(&self) -> DatabasePool;

    /// The largest accepted serialized size of one event's payload plus metadata.
    fn max_event_bytes(&self) -> usize;
}

/// Which backend a database URL selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Postgres,
    Sqlite,
}

impl BackendKind {
    /// `postgres://` and `postgresql://` select PostgreSQL; `sqlite:` URLs select SQLite.
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if lower.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err(StoreError::Config(format!(
                "unsupported database URL {url:?}: expected postgres://…, postgresql://… or sqlite:…"
            )))
        }
    }
}

/// Opens the store behind `url` (the schema must already be migrated).
pub async fn connect(url: &str, options: StoreOptions) -> Result<Arc<dyn EventStore>, StoreError> {
    Ok(match BackendKind::of_url(url)? {
        BackendKind::Postgres => Arc::new(PgStore::connect(url, options).await?),
        BackendKind::Sqlite => Arc::new(SqliteStore::connect(url, options).await?),
    })
}

/// Reads a whole stream (all pages).
pub async fn read_whole_stream(
    store: &dyn EventStore,
    stream: &str,
) -> Result<Vec<RecordedEvent>, StoreError> {
    const PAGE: usize = 1000;
    let mut out = Vec::new();
    loop {
        let from = out.len() as u64 + 1;
        let page = store.read_stream(stream, from, PAGE).await?;
        let done = page.len() < PAGE;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}
