//! The PostgreSQL backend.
//!
//! Appends take `SELECT … FROM event_head FOR UPDATE` first and assign positions after the
//! lock, so positions are gap-free and in commit order across every rollgate instance that
//! shares the database. Commits are announced with `pg_notify('rollgate_events', position)`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::watch;
use uuid::Uuid;

use crate::batch::{AppendRequest, Backend, BatchTx, Committer};
use crate::{
    AppendOutcome, DatabasePool, EventData, EventStore, ExpectedVersion, Head, RecordedEvent,
    StoreError, StoreOptions, StreamCondition,
};

pub const NOTIFY_CHANNEL: &str = "rollgate_events";

use crate::sql::statements::{self, SELECT_EVENT};

pub struct PgStore {
    pool: PgPool,
    committer: Committer,
    head_signal: Arc<watch::Sender<u64>>,
    max_event_bytes: usize,
    _listener: AbortOnDrop,
}

/// Stops the commit listener (and closes its connection) when the store is dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PgStore {
    /// Connects to PostgreSQL (the schema must be migrated) and starts the committer and the
    /// commit listener.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let pool = pool(url, &options).await?;
        Self::with_pool(pool, options).await
    }

    pub async fn with_pool(pool: PgPool, options: StoreOptions) -> Result<Self, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT position FROM event_head WHERE id = 1")
            .fetch_one(&pool)
            .await?;
        let head_signal = Arc::new(watch::channel(head as u64).0);
        let listener = spawn_listener(pool.clone(), Arc::downgrade(&head_signal)).await?;
        let committer = Committer::spawn(
            PgBackend { pool: pool.clone() },
            &options,
            head_signal.clone(),
        );
        Ok(Self {
            pool,
            committer,
            head_signal,
            max_event_bytes: options.max_event_bytes,
            _listener: AbortOnDrop(listener),
        })
    }

    pub fn pg_pool(&self) -> &PgPool {
        &self.pool
    }
}

/// Opens a pool, turning a bad URL or an unreachable server into one clear error.
/// `options` gives the pool size, the application name and how long a request waits for a
/// connection: while the database is unreachable that wait is what every caller spends
/// before being told so (503 at the HTTP edge).
pub async fn pool(url: &str, options: &StoreOptions) -> Result<PgPool, StoreError> {
    let max_connections = options.max_connections;
    let acquire_timeout = options.acquire_timeout;
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?
        .application_name(&options.application_name)
        // Durable acknowledgement does not depend on the server's default.
        .options([("synchronous_commit", "on")]);
    PgPoolOptions::new()
        .max_connections(max_connections.max(2))
        .acquire_timeout(acquire_timeout)
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))
}

/// Relays commits of every process to the head signal; ends once the store is dropped.
async fn spawn_listener(
    pool: PgPool,
    signal: Weak<watch::Sender<u64>>,
) -> Result<tokio::task::AbortHandle, StoreError> {
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    let task = tokio::spawn(async move {
        loop {
            let received = listener.recv().await;
            let Some(signal) = signal.upgrade() else {
                return;
            };
            match received {
                Ok(n) => {
                    if let Ok(p) = n.payload().parse::<u64>() {
                        signal.send_if_modified(|known| {
                            let moved = p > *known;
                            if moved {
                                *known = p;
                            }
                            moved
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "commit listener lost its connection; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
    Ok(task.abort_handle())
}

struct PgBackend {
    pool: PgPool,
}

#[async_trait]
impl Backend for PgBackend {
    type Tx = PgTx;
    async fn begin(&self) -> Result<PgTx, StoreError> {
        Ok(PgTx(self.pool.begin().await?))
    }
}

struct PgTx(Transaction<'static, Postgres>);

#[async_trait]
impl BatchTx for PgTx {
    async fn lock_head(&mut self) -> Result<Head, StoreError> {
        let row = sqlx::query("SELECT position, hash FROM event_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *self.0)
            .await?;
        Ok(Head {
            position: row.try_get::<i64, _>("position")? as u64,
            hash: row.try_get("hash")?,
        })
    }

    async fn existing(&mut self, ids: &[Uuid]) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT_EVENT} WHERE id = ANY($1)"))
            .bind(ids)
            .fetch_all(&mut *self.0)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn versions(&mut self, streams: &[&str]) -> Result<HashMap<String, u64>, StoreError> {
        let rows = sqlx::query(
            // One index probe per stream (backwards on (stream, version)), whatever the
            // streams' lengths.
            "SELECT s.stream, (SELECT e.version FROM events e WHERE e.stream = s.stream \
             ORDER BY e.version DESC LIMIT 1) AS version FROM UNNEST($1::text[]) AS s(stream)",
        )
        .bind(streams)
        .fetch_all(&mut *self.0)
        .await?;
        let mut out = HashMap::new();
        for r in &rows {
            if let Some(v) = r.try_get::<Option<i64>, _>("version")? {
                out.insert(r.try_get("stream")?, v as u64);
            }
        }
        Ok(out)
    }

    async fn insert(&mut self, rows: &[RecordedEvent]) -> Result<(), StoreError> {
        let n = rows.len();
        let mut position = Vec::with_capacity(n);
        let mut stream = Vec::with_capacity(n);
        let mut version = Vec::with_capacity(n);
        let mut id = Vec::with_capacity(n);
        let mut event_type = Vec::with_capacity(n);
        let mut schema_version = Vec::with_capacity(n);
        let mut payload = Vec::with_capacity(n);
        let mut metadata = Vec::with_capacity(n);
        let mut recorded_at = Vec::with_capacity(n);
        let mut prev_hash = Vec::with_capacity(n);
        let mut hash = Vec::with_capacity(n);
        for r in rows {
            position.push(r.position as i64);
            stream.push(r.stream.as_str());
            version.push(r.version as i64);
            id.push(r.id);
            event_type.push(r.event_type.as_str());
            schema_version.push(r.schema_version as i32);
            payload.push(&r.payload);
            metadata.push(&r.metadata);
            recorded_at.push(r.recorded_at);
            prev_hash.push(r.prev_hash.as_str());
            hash.push(r.hash.as_str());
        }
        sqlx::query(
            "INSERT INTO events (position, stream, version, id, event_type, schema_version, \
             payload, metadata, recorded_at, prev_hash, hash) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], \
             $6::int[], $7::jsonb[], $8::jsonb[], $9::timestamptz[], $10::text[], $11::text[])",
        )
        .bind(position)
        .bind(stream)
        .bind(version)
        .bind(id)
        .bind(event_type)
        .bind(schema_version)
        .bind(payload.into_iter().cloned().collect::<Vec<Value>>())
        .bind(metadata.into_iter().cloned().collect::<Vec<Value>>())
        .bind(recorded_at)
        .bind(prev_hash)
        .bind(hash)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn set_head(&mut self, head: &Head) -> Result<(), StoreError> {
        // Moves the head and announces the commit (delivered at COMMIT) in one round trip.
        sqlx::query(
            "WITH moved AS (UPDATE event_head SET position = $1, hash = $2 WHERE id = 1 \
             RETURNING position) SELECT pg_notify($3, position::text) FROM moved",
        )
        .bind(head.position as i64)
        .bind(&head.hash)
        .bind(NOTIFY_CHANNEL)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        Ok(self.0.commit().await?)
    }

    async fn rollback(self) -> Result<(), StoreError> {
        Ok(self.0.rollback().await?)
    }
}

fn decode(row: &PgRow) -> Result<RecordedEvent, StoreError> {
    let position = row.try_get::<i64, _>("position")? as u64;
    Ok(RecordedEvent {
        position,
        stream: row.try_get("stream")?,
        version: row.try_get::<i64, _>("version")? as u64,
        id: row.try_get("id")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get::<i32, _>("schema_version")? as u32,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get::<DateTime<Utc>, _>("recorded_at")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

#[async_trait]
impl EventStore for PgStore {
    async fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
    ) -> Result<AppendOutcome, StoreError> {
        self.append_with(stream, expected, events, None).await
    }

    async fn append_with(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: Vec<EventData>,
        condition: Option<StreamCondition>,
    ) -> Result<AppendOutcome, StoreError> {
        self.committer
            .append(AppendRequest {
                stream: stream.to_owned(),
                expected,
                events,
                condition,
            })
            .await
    }

    async fn read_stream(
        &self,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(statements::READ_STREAM)
            .bind(stream)
            .bind(from_version as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn read_all(
        &self,
        after_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(statements::READ_ALL)
            .bind(after_position as i64)
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn read_all_of_teams(
        &self,
        after_position: u64,
        limit: usize,
        teams: &[String],
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let rows = sqlx::query(statements::READ_ALL_OF_TEAMS_PG)
            .bind(after_position as i64)
            .bind(limit as i64)
            .bind(teams)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn stream_version(&self, stream: &str) -> Result<u64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar(statements::STREAM_VERSION)
            .bind(stream)
            .fetch_one(&self.pool)
            .await?;
        Ok(v.unwrap_or(0) as u64)
    }

    async fn head(&self) -> Result<Head, StoreError> {
        let row = sqlx::query(statements::HEAD).fetch_one(&self.pool).await?;
        Ok(Head {
            position: row.try_get::<i64, _>("position")? as u64,
            hash: row.try_get("hash")?,
        })
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.head_signal.subscribe()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    fn pool(&self) -> DatabasePool {
        DatabasePool::Postgres(self.pool.clone())
    }

    fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }
}
