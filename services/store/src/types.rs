//! The values that cross the store's boundary.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};

/// One event to append. The id makes appends idempotent.
#[derive(Debug, Clone, PartialEq)]
pub struct EventData {
    pub id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: Value,
    pub metadata: Value,
}

/// What the writer believes the stream's version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the version.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must be at exactly this version (0 is the same as `NoStream`).
    Exact(u64),
}

impl ExpectedVersion {
    pub fn admits(self, current: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exact(v) => current == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no stream"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// A read-condition on a second stream, checked inside the append's transaction (under the
/// head lock): the append is written only if `stream` is still at `version` (0: the stream
/// does not exist). Lets a writer commit a decision only while what it decided under (a
/// team's policy, say) is still in force, without reading that stream first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCondition {
    pub stream: String,
    pub version: u64,
}

impl StreamCondition {
    /// `stream` must still be at `version` when the append commits.
    pub fn at(stream: impl Into<String>, version: u64) -> Self {
        Self {
            stream: stream.into(),
            version,
        }
    }
}

/// The answer to a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// The stream's version after the append (the version of its last event).
    pub stream_version: u64,
    /// Global position of the first appended event.
    pub first_position: u64,
    /// Global position of the last appended event.
    pub last_position: u64,
}

/// An event as stored, with its place in the log and in the hash chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub position: u64,
    pub stream: String,
    pub version: u64,
    pub id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: String,
    pub hash: String,
}

/// The head of the log: its last position and the chain hash there. Exported by auditors and
/// checked later to detect truncation or rewriting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub position: u64,
    pub hash: String,
}

/// Test hooks that make an append misbehave inside its transaction, after its rows are
/// written and before it commits. Used by the conformance suite to prove that readers never
/// see gaps whatever writers do.
#[derive(Debug, Clone, Default)]
pub struct FailPoints {
    /// Sleep this long before committing.
    pub sleep_before_commit: Option<Duration>,
    /// Roll back instead of committing (the append fails).
    pub rollback_instead_of_commit: bool,
}

/// Told about every committed batch (the server turns this into Prometheus metrics).
pub trait AppendObserver: Send + Sync + 'static {
    fn batch_committed(&self, requests: usize, events: usize, elapsed: Duration);
}

/// Tunables shared by both backends.
#[derive(Clone)]
pub struct StoreOptions {
    /// Largest serialized payload + metadata of one event (default 1 MiB).
    pub max_event_bytes: usize,
    /// Most append requests committed in one transaction.
    pub max_batch_requests: usize,
    /// Most events committed in one transaction.
    pub max_batch_events: usize,
    /// Committer tasks (PostgreSQL; SQLite always uses one, as it has one writer). More than
    /// one pipelines batches (the next waits on the head lock while one commits); on two
    /// cores one was measured faster (BENCHMARKS.md), so that is the default.
    pub committers: usize,
    /// Connection pool size.
    pub max_connections: u32,
    /// Longest wait for a pooled PostgreSQL connection (also the longest a caller waits to
    /// learn that the database is unreachable).
    pub acquire_timeout: std::time::Duration,
    /// How this instance names itself to PostgreSQL (`pg_stat_activity.application_name`).
    pub application_name: String,
    /// Where recorded times come from.
    pub clock: Arc<dyn Clock>,
    /// Test hooks; empty in production.
    pub fail_points: Arc<Mutex<FailPoints>>,
    /// Optional observer of committed batches.
    pub observer: Option<Arc<dyn AppendObserver>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_event_bytes: 1024 * 1024,
            max_batch_requests: 256,
            max_batch_events: 2048,
            committers: 1,
            max_connections: 16,
            acquire_timeout: std::time::Duration::from_secs(3),
            application_name: "rollgate".to_owned(),
            clock: Arc::new(SystemClock),
            fail_points: Arc::new(Mutex::new(FailPoints::default())),
            observer: None,
        }
    }
}

impl fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreOptions")
            .field("max_event_bytes", &self.max_event_bytes)
            .field("max_batch_requests", &self.max_batch_requests)
            .field("max_batch_events", &self.max_batch_events)
            .field("committers", &self.committers)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}
