//! Look-ups the server needs, each answered by an index. From the log itself: where a
//! deviation was requested (the partial expression index of migration 0004) and where
//! events with given ids are stored (the unique index on `events.id`); they read committed
//! events, so they are current even before the read models have caught up. From a read
//! model: the rollout a GitHub repository and environment are bound to (`github_bindings`,
//! migration 0008); callers wait for the projection first.

use rollgate_store::DatabasePool;
use uuid::Uuid;

use crate::db::{with_conn, Ty, Val};
use crate::ProjectionError;

/// The stream in which `deviation_id` was requested, if it was.
pub async fn deviation_stream(
    pool: &DatabasePool,
    deviation_id: Uuid,
) -> Result<Option<String>, ProjectionError> {
    // `->>` with a plain label means the same on PostgreSQL (jsonb) and SQLite (3.38+),
    // and matches the indexed expression on both.
    let sql = "SELECT stream FROM events WHERE event_type = 'DeviationRequested' \
               AND payload ->> 'deviation_id' = $1 LIMIT 1";
    let args = [Val::text(deviation_id.to_string())];
    let row = with_conn!(pool, |conn| conn
        .fetch_optional(sql, &args, &[Ty::T])
        .await?);
    Ok(row
        .and_then(|r| r.into_iter().next())
        .and_then(Val::into_text))
}

/// Where a stored event is: its stream, version, global position and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPlace {
    pub stream: String,
    pub version: u64,
    pub position: u64,
    pub event_type: String,
}

/// The stored events among `ids`, in log order.
pub async fn events_by_id(
    pool: &DatabasePool,
    ids: &[Uuid],
) -> Result<Vec<StoredPlace>, ProjectionError> {
    let mut sql = crate::db::Sql::new(
        "SELECT stream, version, position, event_type FROM events WHERE id IN ",
    );
    sql.list(ids.iter().map(|id| Val::U(Some(*id))));
    sql.push(" ORDER BY position");
    let tys = [Ty::T, Ty::I, Ty::I, Ty::T];
    let rows = with_conn!(pool, |conn| conn.fetch(&sql.text, &sql.args, &tys).await?);
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut v = row.into_iter();
            let mut next = || v.next().unwrap_or(Val::T(None));
            let stream = next().into_text().unwrap_or_default();
            let version = next().as_i64().unwrap_or_default() as u64;
            let position = next().as_i64().unwrap_or_default() as u64;
            let event_type = next().into_text().unwrap_or_default();
            StoredPlace {
                stream,
                version,
                position,
                event_type,
            }
        })
        .collect())
}

/// The rollout (and its team) of the active binding naming this GitHub `repository`
/// (`owner/name`, compared without case) and `environment`: the oldest, should several
/// name them. Read from the `github_bindings` read model, so it reflects the log up to the
/// projected position.
pub async fn github_binding(
    pool: &DatabasePool,
    repository: &str,
    environment: &str,
) -> Result<Option<(String, String)>, ProjectionError> {
    let sql = "SELECT rollout_id, team FROM github_bindings \
               WHERE repository = $1 AND environment = $2 AND status = 'active' \
               ORDER BY position LIMIT 1";
    let args = [
        Val::text(repository.to_ascii_lowercase()),
        Val::text(environment),
    ];
    let row = with_conn!(pool, |conn| conn
        .fetch_optional(sql, &args, &[Ty::T, Ty::T])
        .await?);
    Ok(row.and_then(|r| {
        let mut v = r.into_iter();
        Some((v.next()?.into_text()?, v.next()?.into_text()?))
    }))
}
