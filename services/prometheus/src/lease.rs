//! One evaluator per rollout across instances: a lease row per rollout in the database
//! (table `evaluator_leases`, migration 0006).
//!
//! [`Leases::acquire`] is one statement: insert the row, or take it over when it is ours or
//! has expired, and answer whether we hold it now. The holder calls it again to renew. Times
//! come from the caller's clock (Unix milliseconds), so tests move a clock instead of sleeping.

use chrono::{DateTime, Duration, Utc};
use rollgate_domain::RolloutId;
use rollgate_store::DatabasePool;

const ACQUIRE_PG: &str = "INSERT INTO evaluator_leases (rollout_id, owner, expires_at, renewed_at) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (rollout_id) DO UPDATE \
     SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at, renewed_at = EXCLUDED.renewed_at \
     WHERE evaluator_leases.owner = EXCLUDED.owner OR evaluator_leases.expires_at <= EXCLUDED.renewed_at \
     RETURNING owner";

const ACQUIRE_SQLITE: &str = "INSERT INTO evaluator_leases (rollout_id, owner, expires_at, renewed_at) \
     VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (rollout_id) DO UPDATE \
     SET owner = excluded.owner, expires_at = excluded.expires_at, renewed_at = excluded.renewed_at \
     WHERE evaluator_leases.owner = excluded.owner OR evaluator_leases.expires_at <= excluded.renewed_at \
     RETURNING owner";

/// The lease table of one database, seen by one instance (`owner`).
#[derive(Clone, Debug)]
pub struct Leases {
    pool: DatabasePool,
    owner: String,
    ttl: Duration,
}

/// Who holds a rollout's lease, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    pub owner: String,
    pub expires_at_ms: i64,
}

impl Leases {
    /// `owner` identifies this instance (unique per process); `ttl` is how long a lease lasts
    /// without renewal, i.e. how soon another instance takes over after this one dies.
    pub fn new(pool: DatabasePool, owner: impl Into<String>, ttl: std::time::Duration) -> Self {
        Leases {
            pool,
            owner: owner.into(),
            ttl: Duration::from_std(ttl).unwrap_or(Duration::seconds(10)),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Takes or renews the lease on `rollout` at `now`; true when this instance holds it.
    pub async fn acquire(
        &self,
        rollout: &RolloutId,
        now: DateTime<Utc>,
    ) -> Result<bool, sqlx::Error> {
        let id = rollout.to_string();
        let now_ms = now.timestamp_millis();
        let expires = (now + self.ttl).timestamp_millis();
        let row: Option<String> = match &self.pool {
            DatabasePool::Postgres(p) => {
                sqlx::query_scalar(ACQUIRE_PG)
                    .bind(&id)
                    .bind(&self.owner)
                    .bind(expires)
                    .bind(now_ms)
                    .fetch_optional(p)
                    .await?
            }
            DatabasePool::Sqlite(p) => {
                sqlx::query_scalar(ACQUIRE_SQLITE)
                    .bind(&id)
                    .bind(&self.owner)
                    .bind(expires)
                    .bind(now_ms)
                    .fetch_optional(p)
                    .await?
            }
        };
        Ok(row.as_deref() == Some(self.owner.as_str()))
    }

    /// Gives the lease up (the rollout needs no evaluator any more, or this instance stops).
    pub async fn release(&self, rollout: &RolloutId) -> Result<(), sqlx::Error> {
        let id = rollout.to_string();
        match &self.pool {
            DatabasePool::Postgres(p) => {
                sqlx::query("DELETE FROM evaluator_leases WHERE rollout_id = $1 AND owner = $2")
                    .bind(&id)
                    .bind(&self.owner)
                    .execute(p)
                    .await?;
            }
            DatabasePool::Sqlite(p) => {
                sqlx::query("DELETE FROM evaluator_leases WHERE rollout_id = ?1 AND owner = ?2")
                    .bind(&id)
                    .bind(&self.owner)
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }

    /// The stored lease of `rollout`, if any.
    pub async fn holder(&self, rollout: &RolloutId) -> Result<Option<LeaseRow>, sqlx::Error> {
        let id = rollout.to_string();
        let row: Option<(String, i64)> = match &self.pool {
            DatabasePool::Postgres(p) => {
                sqlx::query_as(
                    "SELECT owner, expires_at FROM evaluator_leases WHERE rollout_id = $1",
                )
                .bind(&id)
                .fetch_optional(p)
                .await?
            }
            DatabasePool::Sqlite(p) => {
                sqlx::query_as(
                    "SELECT owner, expires_at FROM evaluator_leases WHERE rollout_id = ?1",
                )
                .bind(&id)
                .fetch_optional(p)
                .await?
            }
        };
        Ok(row.map(|(owner, expires_at_ms)| LeaseRow {
            owner,
            expires_at_ms,
        }))
    }
}
