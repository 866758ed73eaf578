//! The delivery tables (migration 0007): checkpoints, leases, attempts and the shared
//! registry position. One SQL text serves both backends (parameters are numbered in the order
//! they first appear, which both PostgreSQL and SQLite accept).

use rollgate_store::DatabasePool;

/// A database failure of the delivery engine.
#[derive(Debug, thiserror::Error)]
#[error("delivery database: {0}")]
pub struct DbError(#[from] pub sqlx::Error);

macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            DatabasePool::Postgres($p) => $body,
            DatabasePool::Sqlite($p) => $body,
        }
    };
}

/// The row name of the shared registry position.
const REGISTRY: &str = "webhooks";

/// Milliseconds since the Unix epoch (leases compare wall-clock times across instances).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Creates the target's checkpoint at `position` unless it exists.
pub async fn ensure_checkpoint(
    pool: &DatabasePool,
    target: &str,
    position: u64,
) -> Result<(), DbError> {
    on_pool!(pool, |p| {
        sqlx::query(
            "INSERT INTO delivery_checkpoints (target, position, updated_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (target) DO NOTHING",
        )
        .bind(target)
        .bind(position as i64)
        .bind(now_ms())
        .execute(p)
        .await?;
    });
    Ok(())
}

/// The target's checkpoint (`None` when it has none).
pub async fn checkpoint(pool: &DatabasePool, target: &str) -> Result<Option<u64>, DbError> {
    let row: Option<(i64,)> = on_pool!(pool, |p| {
        sqlx::query_as("SELECT position FROM delivery_checkpoints WHERE target = $1")
            .bind(target)
            .fetch_optional(p)
            .await?
    });
    Ok(row.map(|(v,)| v.max(0) as u64))
}

/// Every target with a checkpoint whose name starts with `prefix`.
pub async fn targets(pool: &DatabasePool, prefix: &str) -> Result<Vec<String>, DbError> {
    let rows: Vec<(String,)> = on_pool!(pool, |p| {
        sqlx::query_as(
            "SELECT target FROM delivery_checkpoints WHERE substr(target, 1, length($1)) = $1 \
             ORDER BY target",
        )
        .bind(prefix)
        .fetch_all(p)
        .await?
    });
    Ok(rows.into_iter().map(|(t,)| t).collect())
}

/// Moves the checkpoint from `from` to `to` if it is still at `from` and `owner` holds an
/// unexpired lease on the target. False when either is no longer true (a redelivery rewound
/// it, or the lease was lost): the caller re-reads and starts again.
pub async fn advance(
    pool: &DatabasePool,
    target: &str,
    from: u64,
    to: u64,
    owner: &str,
) -> Result<bool, DbError> {
    if from == to {
        return Ok(true);
    }
    let done = on_pool!(pool, |p| {
        sqlx::query(
            "UPDATE delivery_checkpoints SET position = $1, updated_at_ms = $2 \
             WHERE target = $3 AND position = $4 AND EXISTS (\
               SELECT 1 FROM delivery_leases l WHERE l.target = $3 AND l.owner = $5 \
               AND l.expires_at_ms > $2)",
        )
        .bind(to as i64)
        .bind(now_ms())
        .bind(target)
        .bind(from as i64)
        .bind(owner)
        .execute(p)
        .await?
        .rows_affected()
    });
    Ok(done == 1)
}

/// Takes or renews the target's lease for `ttl_ms`; true when `owner` holds it afterwards.
/// An expired lease of another owner is taken over.
pub async fn acquire_lease(
    pool: &DatabasePool,
    target: &str,
    owner: &str,
    ttl_ms: i64,
) -> Result<bool, DbError> {
    let now = now_ms();
    let done = on_pool!(pool, |p| {
        sqlx::query(
            "INSERT INTO delivery_leases (target, owner, expires_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (target) DO UPDATE SET owner = excluded.owner, \
             expires_at_ms = excluded.expires_at_ms \
             WHERE delivery_leases.owner = excluded.owner OR delivery_leases.expires_at_ms <= $4",
        )
        .bind(target)
        .bind(owner)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(p)
        .await?
        .rows_affected()
    });
    Ok(done == 1)
}

/// Gives the lease up (a clean stop; a crash lets it expire instead).
pub async fn release_lease(pool: &DatabasePool, target: &str, owner: &str) -> Result<(), DbError> {
    on_pool!(pool, |p| {
        sqlx::query("DELETE FROM delivery_leases WHERE target = $1 AND owner = $2")
            .bind(target)
            .bind(owner)
            .execute(p)
            .await?;
    });
    Ok(())
}

/// The current holder of a target's lease and its expiry.
pub async fn lease_of(pool: &DatabasePool, target: &str) -> Result<Option<(String, i64)>, DbError> {
    Ok(on_pool!(pool, |p| {
        sqlx::query_as("SELECT owner, expires_at_ms FROM delivery_leases WHERE target = $1")
            .bind(target)
            .fetch_optional(p)
            .await?
    }))
}

/// One delivery attempt, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub target: String,
    pub position: u64,
    pub event_id: String,
    pub attempt: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub owner: String,
    pub attempted_at_ms: i64,
    pub duration_ms: i64,
}

pub async fn record_attempt(pool: &DatabasePool, a: &Attempt) -> Result<(), DbError> {
    on_pool!(pool, |p| {
        sqlx::query(
            "INSERT INTO delivery_attempts (target, position, event_id, attempt, status, error, \
             owner, attempted_at_ms, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&a.target)
        .bind(a.position as i64)
        .bind(&a.event_id)
        .bind(a.attempt as i32)
        .bind(a.status.map(i32::from))
        .bind(a.error.as_deref())
        .bind(&a.owner)
        .bind(a.attempted_at_ms)
        .bind(a.duration_ms)
        .execute(p)
        .await?;
    });
    Ok(())
}

/// The latest `limit` attempts for a target, newest first.
pub async fn recent_attempts(
    pool: &DatabasePool,
    target: &str,
    limit: u32,
) -> Result<Vec<Attempt>, DbError> {
    type Row = (
        String,
        i64,
        String,
        i32,
        Option<i32>,
        Option<String>,
        String,
        i64,
        i64,
    );
    let rows: Vec<Row> = on_pool!(pool, |p| {
        sqlx::query_as(
            "SELECT target, position, event_id, attempt, status, error, owner, attempted_at_ms, \
             duration_ms FROM delivery_attempts WHERE target = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(target)
        .bind(i64::from(limit))
        .fetch_all(p)
        .await?
    });
    Ok(rows
        .into_iter()
        .map(|r| Attempt {
            target: r.0,
            position: r.1.max(0) as u64,
            event_id: r.2,
            attempt: r.3.max(0) as u32,
            status: r.4.and_then(|s| u16::try_from(s).ok()),
            error: r.5,
            owner: r.6,
            attempted_at_ms: r.7,
            duration_ms: r.8,
        })
        .collect())
}

/// The shared registry position (0 before the first registry read).
pub async fn registry_position(pool: &DatabasePool) -> Result<u64, DbError> {
    let row: Option<(i64,)> = on_pool!(pool, |p| {
        sqlx::query(
            "INSERT INTO delivery_registry (name, position) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
        )
        .bind(REGISTRY)
        .execute(p)
        .await?;
        sqlx::query_as("SELECT position FROM delivery_registry WHERE name = $1")
            .bind(REGISTRY)
            .fetch_optional(p)
            .await?
    });
    Ok(row.map_or(0, |(v,)| v.max(0) as u64))
}

/// Moves the shared registry position to `position` if it is behind; true when this call
/// moved it (the caller then applies side effects of the events up to there exactly once).
pub async fn claim_registry(pool: &DatabasePool, position: u64) -> Result<bool, DbError> {
    let done = on_pool!(pool, |p| {
        sqlx::query("UPDATE delivery_registry SET position = $1 WHERE name = $2 AND position < $1")
            .bind(position as i64)
            .bind(REGISTRY)
            .execute(p)
            .await?
            .rows_affected()
    });
    Ok(done == 1)
}

/// Rewinds (or moves) a target's checkpoint for a redelivery request, in one transaction
/// with claiming the registry position of the request, so that it happens exactly once.
pub async fn redeliver_once(
    pool: &DatabasePool,
    request_position: u64,
    target: &str,
    after_position: u64,
) -> Result<bool, DbError> {
    let claimed = on_pool!(pool, |p| {
        let mut tx = p.begin().await?;
        let claimed = sqlx::query(
            "UPDATE delivery_registry SET position = $1 WHERE name = $2 AND position < $1",
        )
        .bind(request_position as i64)
        .bind(REGISTRY)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if claimed {
            sqlx::query(
                "UPDATE delivery_checkpoints SET position = $1, updated_at_ms = $2 WHERE target = $3",
            )
            .bind(after_position as i64)
            .bind(now_ms())
            .bind(target)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        claimed
    });
    Ok(claimed)
}
