//! rollgate's read models.
//!
//! A [`Projector`] follows the event store's global log from per-read-model checkpoints
//! kept in `projection_checkpoints`, and updates the read models and the checkpoints in one
//! transaction, so a crash never loses or doubles an update. [`rebuild`] drops read models
//! and replays the log from position 0, producing exactly the rows of the incremental
//! projection.
//!
//! - [`query`]: list rollouts, the audit trail, the decision log, the approver inbox and the
//!   deviation index, with keyset cursor pagination and team scoping in SQL.
//! - [`timeline`]: per-rollout timeline, step-by-step replay and the post-mortem report,
//!   built from a stream's events (not from tables).
//!
//! The tables are created by `migrations/{postgres,sqlite}/0002_read_models.sql` (and
//! `0008_github_bindings.sql`).

mod db;
pub mod envelope;
pub mod lookup;
pub mod models;
mod projector;
pub mod query;
pub mod timeline;

use rollgate_store::StoreError;

pub use lookup::{deviation_stream, events_by_id, github_binding, StoredPlace};
pub use models::{
    APPROVER_INBOX, AUDIT_TRAIL, DECISION_LOG, DEVIATION_INDEX, GITHUB_BINDINGS, READ_MODELS,
    ROLLOUT_SUMMARIES,
};
pub use projector::{
    dump_read_models, projected_position, rebuild, wait_for_position, BatchOutcome, Projector,
    ProjectorFailPoints, ProjectorHandle, ProjectorOptions,
};
pub use query::{
    audit, decisions, deviation_rollout, get_rollout, inbox, list_rollouts, AuditActor, AuditEntry,
    AuditFilter, DecisionEntry, DecisionFilter, DeviationRef, InboxApproval, InboxItem, InboxQuery,
    Page, RolloutFilter, RolloutSummary, MAX_LIMIT,
};
pub use rollgate_domain::TeamScope;
pub use timeline::{
    postmortem_markdown, replay, timeline, ReplayStep, TimelineEntry, TimelineKind,
};

/// Why a projection or a read-model query failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("database error: {0}")]
    Database(String),
    /// A read-model row this build cannot read.
    #[error("corrupt read model: {0}")]
    Corrupt(String),
    #[error("invalid cursor")]
    InvalidCursor,
    #[error("limit must be between 1 and {MAX_LIMIT}")]
    InvalidLimit,
    #[error("unknown read model {0:?}")]
    UnknownReadModel(String),
    /// The test hook fired after this many events of the batch.
    #[error("projection fail point fired after {0} events")]
    FailPoint(usize),
}

impl From<sqlx::Error> for ProjectionError {
    /// Classified as the store classifies it, so an unreachable database stays
    /// "unavailable" (a 503 to clients) rather than a generic database fault.
    fn from(e: sqlx::Error) -> Self {
        ProjectionError::Store(StoreError::from(e))
    }
}
