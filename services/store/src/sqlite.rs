//! The SQLite backend: the embedded default.
//!
//! WAL journal, `synchronous = FULL` (an acknowledged append survives a process kill and a
//! power cut), and every append transaction opened with `BEGIN IMMEDIATE`, which takes the
//! database's single write lock up front: positions are assigned under that lock, so they
//! are gap-free and in commit order.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool, Transaction};
use tokio::sync::watch;
use uuid::Uuid;

use crate::batch::{AppendRequest, Backend, BatchTx, Committer};
use crate::chain::format_time;
use crate::{
    AppendOutcome, DatabasePool, EventData, EventStore, ExpectedVersion, Head, RecordedEvent,
    StoreError, StoreOptions, StreamCondition,
};

use crate::sql::statements::{self, SELECT_EVENT};

/// Rows per INSERT statement (11 parameters each, well under SQLite's variable limit).
const INSERT_CHUNK: usize = 500;

pub struct SqliteStore {
    pool: SqlitePool,
    committer: Committer,
    head_signal: Arc<watch::Sender<u64>>,
    max_event_bytes: usize,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file; the schema must be migrated.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self, StoreError> {
        let pool = pool(url, options.max_connections).await?;
        Self::with_pool(pool, options).await
    }

    pub async fn with_pool(pool: SqlitePool, options: StoreOptions) -> Result<Self, StoreError> {
        let head: i64 = sqlx::query_scalar("SELECT position FROM event_head WHERE id = 1")
            .fetch_one(&pool)
            .await?;
        let head_signal = Arc::new(watch::channel(head as u64).0);
        // One writer at a time: more committers would only poll for the write lock.
        let options = StoreOptions {
            committers: 1,
            ..options
        };
        let committer = Committer::spawn(
            SqliteBackend { pool: pool.clone() },
            &options,
            head_signal.clone(),
        );
        Ok(Self {
            pool,
            committer,
            head_signal,
            max_event_bytes: options.max_event_bytes,
        })
    }

    pub fn sqlite_pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Opens a pool on a SQLite file with the durability settings the store relies on.
pub async fn pool(url: &str, max_connections: u32) -> Result<SqlitePool, StoreError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Config(format!("invalid SQLite URL: {e}")))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(30))
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(max_connections.max(2))
        .connect_with(options)
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot open SQLite database: {e}")))
}

struct SqliteBackend {
    pool: SqlitePool,
}

#[async_trait]
impl Backend for SqliteBackend {
    type Tx = SqliteTx;
    async fn begin(&self) -> Result<SqliteTx, StoreError> {
        Ok(SqliteTx(self.pool.begin_with("BEGIN IMMEDIATE").await?))
    }
}

struct SqliteTx(Transaction<'static, Sqlite>);

#[async_trait]
impl BatchTx for SqliteTx {
    async fn lock_head(&mut self) -> Result<Head, StoreError> {
        // BEGIN IMMEDIATE already holds the write lock.
        let row = sqlx::query("SELECT position, hash FROM event_head WHERE id = 1")
            .fetch_one(&mut *self.0)
            .await?;
        Ok(Head {
            position: row.try_get::<i64, _>("position")? as u64,
            hash: row.try_get("hash")?,
        })
    }

    async fn existing(&mut self, ids: &[Uuid]) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(format!("{SELECT_EVENT} WHERE id IN ("));
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(id.to_string());
            }
            q.push(")");
            for row in q.build().fetch_all(&mut *self.0).await? {
                out.push(decode(&row)?);
            }
        }
        Ok(out)
    }

    async fn versions(&mut self, streams: &[&str]) -> Result<HashMap<String, u64>, StoreError> {
        let mut out = HashMap::new();
        for chunk in streams.chunks(INSERT_CHUNK) {
            // One index probe per stream, whatever the streams' lengths.
            let mut q = QueryBuilder::<Sqlite>::new("");
            for (i, s) in chunk.iter().enumerate() {
                if i > 0 {
                    q.push(" UNION ALL ");
                }
                q.push("SELECT stream, version FROM (SELECT stream, version FROM events WHERE stream = ");
                q.push_bind(*s);
                q.push(" ORDER BY version DESC LIMIT 1)");
            }
            for row in q.build().fetch_all(&mut *self.0).await? {
                out.insert(
                    row.try_get("stream")?,
                    row.try_get::<i64, _>("version")? as u64,
                );
            }
        }
        Ok(out)
    }

    async fn insert(&mut self, rows: &[RecordedEvent]) -> Result<(), StoreError> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO events (position, stream, version, id, event_type, schema_version, \
                 payload, metadata, recorded_at, prev_hash, hash) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(r.position as i64)
                    .push_bind(r.stream.as_str())
                    .push_bind(r.version as i64)
                    .push_bind(r.id.to_string())
                    .push_bind(r.event_type.as_str())
                    .push_bind(r.schema_version as i64)
                    .push_bind(r.payload.to_string())
                    .push_bind(r.metadata.to_string())
                    .push_bind(format_time(&r.recorded_at))
                    .push_bind(r.prev_hash.as_str())
                    .push_bind(r.hash.as_str());
            });
            q.build().execute(&mut *self.0).await?;
        }
        Ok(())
    }

    async fn set_head(&mut self, head: &Head) -> Result<(), StoreError> {
        sqlx::query("UPDATE event_head SET position = ?, hash = ? WHERE id = 1")
            .bind(head.position as i64)
            .bind(&head.hash)
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

fn decode(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let position = row.try_get::<i64, _>("position")? as u64;
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let id: String = row.try_get("id")?;
    let payload: String = row.try_get("payload")?;
    let metadata: String = row.try_get("metadata")?;
    let recorded_at: String = row.try_get("recorded_at")?;
    Ok(RecordedEvent {
        position,
        stream: row.try_get("stream")?,
        version: row.try_get::<i64, _>("version")? as u64,
        id: Uuid::parse_str(&id).map_err(|e| corrupt(format!("id: {e}")))?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get::<i64, _>("schema_version")? as u32,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt(format!("payload: {e}")))?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt(format!("metadata: {e}")))?,
        recorded_at: DateTime::parse_from_rfc3339(&recorded_at)
            .map_err(|e| corrupt(format!("recorded_at: {e}")))?
            .with_timezone(&Utc),
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

#[async_trait]
impl EventStore for SqliteStore {
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
        let rows = sqlx::query(statements::READ_ALL_OF_TEAMS_SQLITE)
            .bind(after_position as i64)
            .bind(limit as i64)
            .bind(serde_json::Value::from(teams.to_vec()).to_string())
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
        DatabasePool::Sqlite(self.pool.clone())
    }

    fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }
}
