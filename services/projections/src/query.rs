//! Read-model queries: plain async functions answering serializable pages.
//!
//! Pagination is keyset on a position (the event that created the row), so pages never
//! repeat or skip rows while events keep arriving. Cursors are opaque (base64url of the
//! last key); `next_cursor` is `None` on the last page. Team visibility ([`TeamScope`]) is
//! applied in SQL: rows of other teams are never read.

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rollgate_domain::plan::QuorumRule;
use rollgate_domain::{Role, TeamScope};
use rollgate_store::DatabasePool;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db::{with_conn, Row, Sql, Ty, Val};
use crate::ProjectionError;

/// Largest page.
pub const MAX_LIMIT: u32 = 1000;

/// One page of a list: `{"items":[...],"next_cursor":"..."|null}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

fn encode_cursor(key: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("p{key}"))
}

fn decode_cursor(cursor: Option<&str>) -> Result<i64, ProjectionError> {
    let Some(c) = cursor.filter(|c| !c.is_empty()) else {
        return Ok(0);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| ProjectionError::InvalidCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| ProjectionError::InvalidCursor)?;
    text.strip_prefix('p')
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or(ProjectionError::InvalidCursor)
}

fn check_limit(limit: u32) -> Result<i64, ProjectionError> {
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(i64::from(limit))
    } else {
        Err(ProjectionError::InvalidLimit)
    }
}

/// Adds `AND <column> IN (teams)`; false when the scope admits no team at all.
fn scope(sql: &mut Sql, column: &str, teams: &TeamScope) -> bool {
    match teams {
        TeamScope::All => true,
        TeamScope::Teams(set) if set.is_empty() => false,
        TeamScope::Teams(set) => {
            sql.push(&format!(" AND {column} IN "))
                .list(set.iter().map(|t| Val::text(t.as_str())));
            true
        }
    }
}

/// Runs a page query: `sql` must select the key first and end before `ORDER BY`.
async fn page_rows(
    pool: &DatabasePool,
    mut sql: Sql,
    key: &str,
    limit: i64,
    tys: &[Ty],
) -> Result<(Vec<Row>, Option<String>), ProjectionError> {
    sql.push(&format!(" ORDER BY {key} LIMIT "))
        .arg(Val::int(limit + 1));
    let mut rows = with_conn!(pool, |conn| conn.fetch(&sql.text, &sql.args, tys).await?);
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().and_then(|r| r[0].as_i64()).map(encode_cursor)
    } else {
        None
    };
    Ok((rows, next))
}

fn text(v: &mut std::vec::IntoIter<Val>) -> Option<String> {
    v.next().and_then(Val::into_text)
}
fn int(v: &mut std::vec::IntoIter<Val>) -> Option<i64> {
    v.next().and_then(|x| x.as_i64())
}
fn time(v: &mut std::vec::IntoIter<Val>) -> DateTime<Utc> {
    v.next().and_then(|x| x.as_time()).unwrap_or_default()
}
fn json<T: serde::de::DeserializeOwned + Default>(v: &mut std::vec::IntoIter<Val>) -> T {
    text(v)
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Rollouts
// ---------------------------------------------------------------------------

/// One rollout in a list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RolloutSummary {
    pub id: String,
    pub team: String,
    pub feature_key: String,
    pub title: String,
    pub status: String,
    pub stage_index: Option<u32>,
    pub stage_name: Option<String>,
    pub stage_count: u32,
    pub exposure: f64,
    pub plan_revision: u32,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The last event folded into this summary.
    pub last_position: u64,
}

/// Filters of `GET /v1/rollouts`.
#[derive(Clone, Debug)]
pub struct RolloutFilter {
    /// The caller's teams (R11).
    pub teams: TeamScope,
    /// One team among the visible ones.
    pub team: Option<String>,
    pub status: Option<String>,
    pub feature_key: Option<String>,
    /// Current stage index.
    pub stage: Option<u32>,
}

impl RolloutFilter {
    pub fn new(teams: TeamScope) -> Self {
        Self {
            teams,
            team: None,
            status: None,
            feature_key: None,
            stage: None,
        }
    }
}

const SUMMARY_COLUMNS: &str = "created_position, rollout_id, team, feature_key, title, status, \
     stage_index, stage_name, stage_count, exposure, plan_revision, created_by, created_at, \
     updated_at, last_position";
const SUMMARY_TYS: [Ty; 15] = [
    Ty::I,
    Ty::T,
    Ty::T,
    Ty::T,
    Ty::T,
    Ty::T,
    Ty::I,
    Ty::T,
    Ty::I,
    Ty::F,
    Ty::I,
    Ty::T,
    Ty::Ts,
    Ty::Ts,
    Ty::I,
];

fn summary_of(row: Row) -> RolloutSummary {
    let mut v = row.into_iter();
    let _key = int(&mut v);
    RolloutSummary {
        id: text(&mut v).unwrap_or_default(),
        team: text(&mut v).unwrap_or_default(),
        feature_key: text(&mut v).unwrap_or_default(),
        title: text(&mut v).unwrap_or_default(),
        status: text(&mut v).unwrap_or_default(),
        stage_index: int(&mut v).map(|i| i as u32),
        stage_name: text(&mut v),
        stage_count: int(&mut v).unwrap_or_default() as u32,
        exposure: v.next().and_then(|x| x.as_f64()).unwrap_or_default(),
        plan_revision: int(&mut v).unwrap_or_default() as u32,
        created_by: text(&mut v).unwrap_or_default(),
        created_at: time(&mut v),
        updated_at: time(&mut v),
        last_position: int(&mut v).unwrap_or_default() as u64,
    }
}

/// Rollouts visible to the caller, oldest first.
pub async fn list_rollouts(
    pool: &DatabasePool,
    filter: &RolloutFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<RolloutSummary>, ProjectionError> {
    let limit = check_limit(limit)?;
    let after = decode_cursor(cursor)?;
    let mut sql = Sql::new(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM rollout_summaries WHERE created_position > "
    ));
    sql.arg(Val::int(after));
    if !scope(&mut sql, "team", &filter.teams) {
        return Ok(empty());
    }
    if let Some(t) = &filter.team {
        sql.push(" AND team = ").arg(Val::text(t));
    }
    if let Some(s) = &filter.status {
        sql.push(" AND status = ").arg(Val::text(s));
    }
    if let Some(f) = &filter.feature_key {
        sql.push(" AND feature_key = ").arg(Val::text(f));
    }
    if let Some(s) = filter.stage {
        sql.push(" AND stage_index = ").arg(Val::int(i64::from(s)));
    }
    let (rows, next_cursor) = page_rows(pool, sql, "created_position", limit, &SUMMARY_TYS).await?;
    Ok(Page {
        items: rows.into_iter().map(summary_of).collect(),
        next_cursor,
    })
}

/// One rollout's summary, if it exists and is visible to the caller.
pub async fn get_rollout(
    pool: &DatabasePool,
    teams: &TeamScope,
    rollout_id: Uuid,
) -> Result<Option<RolloutSummary>, ProjectionError> {
    let mut sql = Sql::new(&format!(
        "SELECT {SUMMARY_COLUMNS} FROM rollout_summaries WHERE rollout_id = "
    ));
    sql.arg(Val::text(rollout_id.to_string()));
    if !scope(&mut sql, "team", teams) {
        return Ok(None);
    }
    let row = with_conn!(pool, |conn| conn
        .fetch_optional(&sql.text, &sql.args, &SUMMARY_TYS)
        .await?);
    Ok(row.map(summary_of))
}

fn empty<T>() -> Page<T> {
    Page {
        items: Vec::new(),
        next_cursor: None,
    }
}

// ---------------------------------------------------------------------------
// Audit trail
// ---------------------------------------------------------------------------

/// Who acted: the JWT `sub` and the roles held at that moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditActor {
    pub id: Option<String>,
    pub roles: Vec<String>,
}

/// One audit entry (exactly the documented shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub position: u64,
    pub stream: String,
    pub rollout_id: Option<String>,
    pub team: Option<String>,
    pub event_type: String,
    pub actor: AuditActor,
    pub recorded_at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub summary: String,
}

/// Filters of `GET /v1/audit`. Times bound `recorded_at`: `from` inclusive, `to` exclusive.
#[derive(Clone, Debug)]
pub struct AuditFilter {
    pub teams: TeamScope,
    pub team: Option<String>,
    pub actor: Option<String>,
    pub rollout_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl AuditFilter {
    pub fn new(teams: TeamScope) -> Self {
        Self {
            teams,
            team: None,
            actor: None,
            rollout_id: None,
            event_type: None,
            from: None,
            to: None,
        }
    }
}

/// The audit trail, oldest first.
pub async fn audit(
    pool: &DatabasePool,
    filter: &AuditFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<AuditEntry>, ProjectionError> {
    let limit = check_limit(limit)?;
    let after = decode_cursor(cursor)?;
    let mut sql = Sql::new(
        "SELECT position, stream, rollout_id, team, event_type, actor_id, actor_roles, \
         recorded_at, request_id, summary FROM audit_trail WHERE position > ",
    );
    sql.arg(Val::int(after));
    if !scope(&mut sql, "team", &filter.teams) {
        return Ok(empty());
    }
    // SQLite's planner, short of statistics, may drive the query from the least selective
    // index (every row has the same event type); name the index to use by disqualifying the
    // others with a unary `+` (SQLite only: PostgreSQL plans from its own statistics).
    let sqlite = matches!(pool, DatabasePool::Sqlite(_));
    let driver = if filter.actor.is_some() {
        "actor_id"
    } else if filter.rollout_id.is_some() {
        "rollout_id"
    } else if filter.team.is_some() {
        "team"
    } else {
        "event_type"
    };
    let col = |c: &str| {
        if sqlite && c != driver {
            format!(" AND +{c} = ")
        } else {
            format!(" AND {c} = ")
        }
    };
    if let Some(t) = &filter.team {
        sql.push(&col("team")).arg(Val::text(t));
    }
    if let Some(a) = &filter.actor {
        sql.push(&col("actor_id")).arg(Val::text(a));
    }
    if let Some(r) = &filter.rollout_id {
        sql.push(&col("rollout_id")).arg(Val::text(r.to_string()));
    }
    if let Some(t) = &filter.event_type {
        sql.push(&col("event_type")).arg(Val::text(t));
    }
    if let Some(t) = filter.from {
        sql.push(" AND recorded_at >= ").arg(Val::time(t));
    }
    if let Some(t) = filter.to {
        sql.push(" AND recorded_at < ").arg(Val::time(t));
    }
    let tys = [
        Ty::I,
        Ty::T,
        Ty::T,
        Ty::T,
        Ty::T,
        Ty::T,
        Ty::T,
        Ty::Ts,
        Ty::T,
        Ty::T,
    ];
    let (rows, next_cursor) = page_rows(pool, sql, "position", limit, &tys).await?;
    let items = rows
        .into_iter()
        .map(|row| {
            let mut v = row.into_iter();
            AuditEntry {
                position: int(&mut v).unwrap_or_default() as u64,
                stream: text(&mut v).unwrap_or_default(),
                rollout_id: text(&mut v),
                team: text(&mut v),
                event_type: text(&mut v).unwrap_or_default(),
                actor: AuditActor {
                    id: text(&mut v),
                    roles: json(&mut v),
                },
                recorded_at: time(&mut v),
                request_id: text(&mut v),
                summary: text(&mut v).unwrap_or_default(),
            }
        })
        .collect();
    Ok(Page { items, next_cursor })
}

// ---------------------------------------------------------------------------
// Decision log
// ---------------------------------------------------------------------------

/// One decision-log entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionEntry {
    pub position: u64,
    /// See [`crate::models::kind`].
    pub kind: String,
    pub stream: String,
    pub rollout_id: Option<String>,
    pub team: Option<String>,
    /// The request, deviation, decision or freeze the entry is about.
    pub subject_id: Option<String>,
    pub stage: Option<u32>,
    pub actor: AuditActor,
    pub policy_version: Option<u64>,
    pub decided_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub summary: String,
    pub title: Option<String>,
    pub rationale: Option<String>,
    pub alternatives: Vec<String>,
    pub outcome: Option<String>,
}

/// Filters of `GET /v1/decisions`. Times bound `decided_at`: `from` inclusive, `to` exclusive.
#[derive(Clone, Debug)]
pub struct DecisionFilter {
    pub teams: TeamScope,
    pub team: Option<String>,
    pub rollout_id: Option<Uuid>,
    pub kind: Option<String>,
    pub actor: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl DecisionFilter {
    pub fn new(teams: TeamScope) -> Self {
        Self {
            teams,
            team: None,
            rollout_id: None,
            kind: None,
            actor: None,
            from: None,
            to: None,
        }
    }
}

/// The decision log, oldest first.
pub async fn decisions(
    pool: &DatabasePool,
    filter: &DecisionFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<DecisionEntry>, ProjectionError> {
    let limit = check_limit(limit)?;
    let after = decode_cursor(cursor)?;
    let mut sql = Sql::new(
        "SELECT position, kind, stream, rollout_id, team, subject_id, stage, actor_id, \
         actor_roles, policy_version, decided_at, recorded_at, summary, title, rationale, \
         alternatives, outcome FROM decision_log WHERE position > ",
    );
    sql.arg(Val::int(after));
    if !scope(&mut sql, "team", &filter.teams) {
        return Ok(empty());
    }
    if let Some(t) = &filter.team {
        sql.push(" AND team = ").arg(Val::text(t));
    }
    if let Some(r) = &filter.rollout_id {
        sql.push(" AND rollout_id = ").arg(Val::text(r.to_string()));
    }
    if let Some(k) = &filter.kind {
        sql.push(" AND kind = ").arg(Val::text(k));
    }
    if let Some(a) = &filter.actor {
        sql.push(" AND actor_id = ").arg(Val::text(a));
    }
    if let Some(t) = filter.from {
        sql.push(" AND decided_at >= ").arg(Val::time(t));
    }
    if let Some(t) = filter.to {
        sql.push(" AND decided_at < ").arg(Val::time(t));
    }
    let tys = [
        Ty::I,
        Ty::T,
        Ty::T,
        Ty::T,
        Ty::T,
        Ty::T,
        Ty::I,
        Ty::T,
        Ty::T,
        Ty::I,
        Ty::Ts,
        Ty::Ts,
        Ty::T,
        Ty::T,
        Ty::T,
        Ty::T,
        Ty::T,
    ];
    let (rows, next_cursor) = page_rows(pool, sql, "position", limit, &tys).await?;
    let items = rows
        .into_iter()
        .map(|row| {
            let mut v = row.into_iter();
            DecisionEntry {
                position: int(&mut v).unwrap_or_default() as u64,
                kind: text(&mut v).unwrap_or_default(),
                stream: text(&mut v).unwrap_or_default(),
                rollout_id: text(&mut v),
                team: text(&mut v),
                subject_id: text(&mut v),
                stage: int(&mut v).map(|s| s as u32),
                actor: AuditActor {
                    id: text(&mut v),
                    roles: json(&mut v),
                },
                policy_version: int(&mut v).map(|p| p as u64),
                decided_at: time(&mut v),
                recorded_at: time(&mut v),
                summary: text(&mut v).unwrap_or_default(),
                title: text(&mut v),
                rationale: text(&mut v),
                alternatives: json(&mut v),
                outcome: text(&mut v),
            }
        })
        .collect();
    Ok(Page { items, next_cursor })
}

// ---------------------------------------------------------------------------
// Approver inbox
// ---------------------------------------------------------------------------

/// Who is asking for their inbox.
#[derive(Clone, Debug)]
pub struct InboxQuery {
    pub actor_id: String,
    pub roles: BTreeSet<Role>,
    pub teams: TeamScope,
}

/// An approval given so far on an open request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxApproval {
    pub approver: String,
    pub roles: Vec<String>,
    pub approved_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// An open advance request the caller may decide.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InboxItem {
    pub request_id: String,
    pub rollout_id: String,
    pub team: String,
    pub from_stage: Option<u32>,
    pub to_stage: u32,
    pub to_stage_name: Option<String>,
    pub plan_revision: u32,
    /// The target stage's quorum rules (all must be met).
    pub required: Vec<QuorumRule>,
    pub approvals: Vec<InboxApproval>,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub position: u64,
}

/// Open requests whose target stage's quorum names one of the caller's roles, in the
/// caller's teams, excluding the caller's own requests (R2) and those the caller already
/// approved (R3).
pub async fn inbox(
    pool: &DatabasePool,
    query: &InboxQuery,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<InboxItem>, ProjectionError> {
    let limit = check_limit(limit)?;
    let after = decode_cursor(cursor)?;
    if query.roles.is_empty() {
        return Ok(empty());
    }
    let mut sql = Sql::new(
        "SELECT i.position, i.request_id, i.rollout_id, i.team, i.from_stage, i.to_stage, \
         i.to_stage_name, i.plan_revision, i.quorum, i.requested_by, i.requested_at \
         FROM approver_inbox i WHERE i.position > ",
    );
    sql.arg(Val::int(after));
    if !scope(&mut sql, "i.team", &query.teams) {
        return Ok(empty());
    }
    sql.push(" AND i.requested_by <> ")
        .arg(Val::text(&query.actor_id));
    sql.push(
        " AND NOT EXISTS (SELECT 1 FROM approver_inbox_approvals a \
         WHERE a.request_id = i.request_id AND a.approver = ",
    )
    .arg(Val::text(&query.actor_id))
    .push(")");
    sql.push(" AND (");
    for (n, role) in query.roles.iter().enumerate() {
        if n > 0 {
            sql.push(" OR ");
        }
        sql.push("i.quorum_roles LIKE ")
            .arg(Val::text(format!("%,{},%", role.as_str())));
    }
    sql.push(")");
    let tys = [
        Ty::I,
        Ty::T,
        Ty::T,
        Ty::T,
        Ty::I,
        Ty::I,
        Ty::T,
        Ty::I,
        Ty::T,
        Ty::T,
        Ty::Ts,
    ];
    let (rows, next_cursor) = page_rows(pool, sql, "i.position", limit, &tys).await?;
    let mut items: Vec<InboxItem> = rows
        .into_iter()
        .map(|row| {
            let mut v = row.into_iter();
            InboxItem {
                position: int(&mut v).unwrap_or_default() as u64,
                request_id: text(&mut v).unwrap_or_default(),
                rollout_id: text(&mut v).unwrap_or_default(),
                team: text(&mut v).unwrap_or_default(),
                from_stage: int(&mut v).map(|s| s as u32),
                to_stage: int(&mut v).unwrap_or_default() as u32,
                to_stage_name: text(&mut v),
                plan_revision: int(&mut v).unwrap_or_default() as u32,
                required: json(&mut v),
                requested_by: text(&mut v).unwrap_or_default(),
                requested_at: time(&mut v),
                approvals: Vec::new(),
            }
        })
        .collect();
    if items.is_empty() {
        return Ok(Page { items, next_cursor });
    }
    let mut sql = Sql::new(
        "SELECT request_id, approver, roles, approved_at, expires_at \
         FROM approver_inbox_approvals WHERE request_id IN ",
    );
    sql.list(items.iter().map(|i| Val::text(&i.request_id)));
    sql.push(" ORDER BY position");
    let rows = with_conn!(pool, |conn| conn
        .fetch(&sql.text, &sql.args, &[Ty::T, Ty::T, Ty::T, Ty::Ts, Ty::Ts])
        .await?);
    let mut by_request: BTreeMap<String, Vec<InboxApproval>> = BTreeMap::new();
    for row in rows {
        let mut v = row.into_iter();
        let request = text(&mut v).unwrap_or_default();
        by_request.entry(request).or_default().push(InboxApproval {
            approver: text(&mut v).unwrap_or_default(),
            roles: json(&mut v),
            approved_at: time(&mut v),
            expires_at: time(&mut v),
        });
    }
    for item in &mut items {
        item.approvals = by_request.remove(&item.request_id).unwrap_or_default();
    }
    Ok(Page { items, next_cursor })
}

// ---------------------------------------------------------------------------
// Deviation index
// ---------------------------------------------------------------------------

/// Where a deviation belongs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviationRef {
    pub deviation_id: String,
    pub rollout_id: String,
    pub team: String,
    pub stage: Option<u32>,
    /// requested, granted, denied or used.
    pub status: String,
    pub requested_by: String,
}

/// The rollout a deviation belongs to (team scoping is the caller's: R11 answers 404).
pub async fn deviation_rollout(
    pool: &DatabasePool,
    deviation_id: Uuid,
) -> Result<Option<DeviationRef>, ProjectionError> {
    let sql = "SELECT deviation_id, rollout_id, team, stage, status, requested_by \
               FROM deviation_index WHERE deviation_id = $1";
    let args = [Val::text(deviation_id.to_string())];
    let row = with_conn!(pool, |conn| conn
        .fetch_optional(sql, &args, &[Ty::T, Ty::T, Ty::T, Ty::I, Ty::T, Ty::T])
        .await?);
    Ok(row.map(|row| {
        let mut v = row.into_iter();
        DeviationRef {
            deviation_id: text(&mut v).unwrap_or_default(),
            rollout_id: text(&mut v).unwrap_or_default(),
            team: text(&mut v).unwrap_or_default(),
            stage: int(&mut v).map(|s| s as u32),
            status: text(&mut v).unwrap_or_default(),
            requested_by: text(&mut v).unwrap_or_default(),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        assert_eq!(decode_cursor(Some(&encode_cursor(42))).unwrap(), 42);
        assert_eq!(decode_cursor(None).unwrap(), 0);
        assert!(decode_cursor(Some("!!")).is_err());
        assert!(decode_cursor(Some(&URL_SAFE_NO_PAD.encode("x1"))).is_err());
        assert!(check_limit(0).is_err());
        assert!(check_limit(1001).is_err());
        assert_eq!(check_limit(1000).unwrap(), 1000);
    }
}
