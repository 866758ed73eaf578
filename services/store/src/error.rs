//! Errors of the event store. Cloneable: one database failure answers every request of a batch.

use uuid::Uuid;

use crate::ExpectedVersion;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Optimistic concurrency: the stream is not at the expected version.
    #[error("stream {stream} is at version {current}, expected {expected}")]
    WrongExpectedVersion {
        stream: String,
        expected: ExpectedVersion,
        current: u64,
    },
    /// The append's read-condition failed: the condition stream is no longer at the
    /// version the writer decided under. Nothing was written.
    #[error("condition failed: stream {stream} is at version {current}, expected {expected}")]
    ConditionFailed {
        stream: String,
        expected: u64,
        current: u64,
    },
    /// An event id is already stored with different content (or in another append).
    #[error("event {event_id} was already appended with different content")]
    IdempotencyMismatch { event_id: Uuid },
    /// An event is over the configured size limit; nothing was written.
    #[error("event {event_id} is {size} bytes, over the limit of {limit} bytes")]
    EventTooLarge {
        event_id: Uuid,
        size: usize,
        limit: usize,
    },
    /// The append call carried no events, or the same event id twice.
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// Configuration problem: an invalid URL, say.
    #[error("{0}")]
    Config(String),
    /// The database could not be reached.
    #[error("database unreachable: {0}")]
    Unavailable(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(String),
    /// A stored row could not be decoded.
    #[error("corrupt stored event at position {position}: {reason}")]
    Corrupt { position: u64, reason: String },
    /// The store is shutting down.
    #[error("event store is closed")]
    Closed,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
            // SQLSTATE class 08 (connection exception) and 57P (the server shutting down or
            // starting up): the database is going away, not refusing the statement.
            sqlx::Error::Database(ref db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Configuration(_) => StoreError::Config(e.to_string()),
            other => StoreError::Database(other.to_string()),
        }
    }
}
