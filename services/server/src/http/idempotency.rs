//! `Idempotency-Key` on writes: the first answer to a (caller, key) is stored durably and
//! replayed for a retry with the same request; the same key with another request is a 422
//! (the first request's fingerprint is kept for the life of the record, also when a retry
//! takes an unanswered claim over).
//!
//! A claim belongs to one attempt (a random token): recording or releasing it touches that
//! attempt's claim only. A claim left unanswered (its process died, or it is still running)
//! does not block a retry: the retry takes it over and runs the command again, and because
//! the command's ids are derived from (caller, key, request) ([`crate::command::Ids`]) a
//! command that was committed before is recognised in the log and answered with its
//! original outcome instead of being written twice.
//!
//! Records expire [`TTL_HOURS`] after their first claim (answers, refusals included, are
//! not kept for ever): an expired record is replaced by the next claim and purged by a
//! background task every [`PURGE_EVERY`].

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use rollgate_store::sql::{Ty, Val};
use rollgate_store::DatabasePool;
use sha2::{Digest, Sha256};

use crate::http::problem::{Problem, ProblemType, PROBLEM_JSON};
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";

/// How long a record (an answer, or an unanswered claim) is kept.
pub const TTL_HOURS: i64 = 24;

/// How often expired records are deleted.
pub const PURGE_EVERY: Duration = Duration::from_secs(600);

/// An answer as it is stored and replayed.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub etag: Option<String>,
    pub location: Option<String>,
    pub body: serde_json::Value,
}

impl Reply {
    pub fn into_response(self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status);
        if let Some(e) = &self.etag {
            r.insert_header(("ETag", e.as_str()));
        }
        if let Some(l) = &self.location {
            r.insert_header(("Location", l.as_str()));
        }
        if self.status.is_success() {
            r.json(self.body)
        } else {
            r.content_type(PROBLEM_JSON).json(self.body)
        }
    }

    fn from_problem(p: &Problem) -> Self {
        Reply {
            status: p.status_code(),
            etag: None,
            location: None,
            body: serde_json::to_value(p).unwrap_or_default(),
        }
    }
}

enum Claim {
    /// This attempt holds the claim (its token).
    Mine(String),
    Replay(Reply),
}

/// The request's Idempotency-Key, if it has one (422 when it is unusable).
pub fn key_of(req: &HttpRequest) -> Result<Option<String>, Problem> {
    let Some(v) = req.headers().get(HEADER) else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| {
            Problem::invalid_field(
                "Idempotency-Key",
                "must be 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// What makes two requests "the same request": method, path and body.
pub fn fingerprint(req: &HttpRequest, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(req.method().as_str().as_bytes());
    h.update(b" ");
    h.update(req.uri().path().as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

/// Runs `handle` at most once per (caller, Idempotency-Key); without a key it just runs.
pub async fn once<F, Fut>(
    pool: &DatabasePool,
    principal: &str,
    req: &HttpRequest,
    body: &[u8],
    now: DateTime<Utc>,
    handle: F,
) -> Result<HttpResponse, Problem>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Reply, Problem>>,
{
    let Some(key) = key_of(req)? else {
        return handle().await.map(Reply::into_response);
    };
    let hash = fingerprint(req, body);
    let token = match claim(pool, principal, &key, &hash, now).await? {
        Claim::Replay(reply) => return Ok(reply.into_response()),
        Claim::Mine(token) => token,
    };
    let outcome = handle().await;
    let reply = match &outcome {
        Ok(reply) => reply.clone(),
        Err(p) if p.status < 500 && p.type_uri != ProblemType::VersionConflict.uri() => {
            Reply::from_problem(p)
        }
        Err(_) => {
            // A server fault is not an answer, nor a version conflict (it asks for a retry
            // and wrote nothing): let the client retry with the same key.
            release(pool, principal, &key, &token).await;
            return outcome.map(Reply::into_response);
        }
    };
    record(pool, principal, &key, &token, &reply).await?;
    outcome.map(Reply::into_response)
}

fn db_problem(e: sqlx::Error) -> Problem {
    Problem::from(rollgate_store::StoreError::from(e))
}

const WHERE_KEY: &str = "WHERE principal = $1 AND key = $2";

async fn claim(
    pool: &DatabasePool,
    principal: &str,
    key: &str,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<Claim, Problem> {
    let token = uuid::Uuid::new_v4().to_string();
    let expired = now - chrono::Duration::hours(TTL_HOURS);
    let (p, k) = (Val::text(principal), Val::text(key));
    pool.exec(
        &format!("DELETE FROM idempotency_records {WHERE_KEY} AND created_at < $3"),
        &[p.clone(), k.clone(), Val::time(expired)],
    )
    .await
    .map_err(db_problem)?;
    let inserted = pool
        .exec(
            "INSERT INTO idempotency_records \
             (principal, key, request_hash, status, body, created_at, claim) \
             VALUES ($1, $2, $3, 0, '', $4, $5) ON CONFLICT DO NOTHING",
            &[
                p.clone(),
                k.clone(),
                Val::text(hash),
                Val::time(now),
                Val::text(&token),
            ],
        )
        .await
        .map_err(db_problem)?;
    if inserted == 1 {
        return Ok(Claim::Mine(token));
    }
    // Unanswered: take the claim over (the same request only; the first hash is kept).
    let taken = pool
        .exec(
            &format!(
                "UPDATE idempotency_records SET claim = $4 {WHERE_KEY} \
                 AND status = 0 AND request_hash = $3"
            ),
            &[p.clone(), k.clone(), Val::text(hash), Val::text(&token)],
        )
        .await
        .map_err(db_problem)?;
    if taken == 1 {
        return Ok(Claim::Mine(token));
    }
    let row = pool
        .fetch_optional(
            &format!(
                "SELECT request_hash, CAST(status AS BIGINT), etag, location, body \
                 FROM idempotency_records {WHERE_KEY}"
            ),
            &[p, k],
            &[Ty::T, Ty::I, Ty::T, Ty::T, Ty::T],
        )
        .await
        .map_err(db_problem)?;
    let mut row = row.unwrap_or_default().into_iter();
    let mut text = || row.next().and_then(Val::into_text);
    let stored_hash = text();
    if stored_hash.as_deref() != Some(hash) {
        return Err(Problem::new(
            ProblemType::IdempotencyKeyReused,
            "this Idempotency-Key was already used for a different request",
        ));
    }
    let status = row.next().and_then(|v| v.as_i64()).unwrap_or_default();
    let mut text = || row.next().and_then(Val::into_text);
    let (etag, location, body) = (text(), text(), text());
    Ok(Claim::Replay(Reply {
        status: StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK),
        etag,
        location,
        body: serde_json::from_str(body.as_deref().unwrap_or_default()).unwrap_or_default(),
    }))
}

/// Stores the answer, if this attempt still holds the claim (otherwise a retry took it over
/// and records the same outcome).
async fn record(
    pool: &DatabasePool,
    principal: &str,
    key: &str,
    token: &str,
    reply: &Reply,
) -> Result<(), Problem> {
    let args = [
        Val::text(principal),
        Val::text(key),
        Val::text(token),
        Val::int(i64::from(reply.status.as_u16())),
        Val::opt_text(reply.etag.clone()),
        Val::opt_text(reply.location.clone()),
        Val::text(reply.body.to_string()),
    ];
    let updated = pool
        .exec(
            &format!(
                "UPDATE idempotency_records SET status = $4, etag = $5, location = $6, \
                 body = $7 {WHERE_KEY} AND claim = $3 AND status = 0"
            ),
            &args,
        )
        .await
        .map_err(db_problem)?;
    if updated == 0 {
        tracing::info!(
            key,
            "idempotency claim taken over by a retry; its answer stands"
        );
    }
    Ok(())
}

/// Gives the claim up after a server fault, if this attempt still holds it.
async fn release(pool: &DatabasePool, principal: &str, key: &str, token: &str) {
    let result = pool
        .exec(
            &format!("DELETE FROM idempotency_records {WHERE_KEY} AND claim = $3 AND status = 0"),
            &[Val::text(principal), Val::text(key), Val::text(token)],
        )
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot release an idempotency key");
    }
}

/// Deletes records older than the TTL; answers how many.
pub async fn purge(pool: &DatabasePool, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let expired = now - chrono::Duration::hours(TTL_HOURS);
    pool.exec(
        "DELETE FROM idempotency_records WHERE created_at < $1",
        &[Val::time(expired)],
    )
    .await
}

/// Purges expired records every [`PURGE_EVERY`] while the server's state lives.
pub fn spawn_purge(state: web::Data<AppState>) {
    let state = Arc::downgrade(&state.into_inner());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PURGE_EVERY).await;
            let Some(state) = state.upgrade() else { return };
            match purge(&state.store.pool(), state.clock.now()).await {
                Ok(n) if n > 0 => tracing::info!(purged = n, "expired idempotency records"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot purge idempotency records"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn mine(pool: &DatabasePool, hash: &str, now: DateTime<Utc>) -> String {
        match claim(pool, "alice", "k", hash, now).await.expect("claim") {
            Claim::Mine(token) => token,
            Claim::Replay(r) => panic!("replayed {:?}", r.body),
        }
    }

    #[tokio::test]
    async fn record_and_release_touch_only_their_own_claim() {
        let db = rollgate_testkit::TestDb::sqlite();
        let store = db.store(Default::default()).await;
        let pool = store.pool();
        let now = Utc::now();
        let first = mine(&pool, "h", now).await;
        // A retry of the same request takes the unanswered claim over at once.
        let second = mine(&pool, "h", now).await;
        assert_ne!(first, second);
        // The first attempt can neither release the claim nor answer any more.
        release(&pool, "alice", "k", &first).await;
        let late = Reply {
            status: StatusCode::CREATED,
            etag: None,
            location: None,
            body: json!({ "attempt": 1 }),
        };
        record(&pool, "alice", "k", &first, &late).await.unwrap();
        let answer = Reply {
            body: json!({ "attempt": 2 }),
            ..late.clone()
        };
        record(&pool, "alice", "k", &second, &answer).await.unwrap();
        match claim(&pool, "alice", "k", "h", now).await.unwrap() {
            Claim::Replay(r) => assert_eq!(r.body, json!({ "attempt": 2 })),
            Claim::Mine(_) => panic!("the answer was not recorded"),
        }
        // The first request's fingerprint stands: another request with the key is refused.
        let other = claim(&pool, "alice", "k", "other", now).await;
        assert!(matches!(other, Err(p) if p.status == 422));
    }

    #[tokio::test]
    async fn an_unanswered_claim_keeps_its_fingerprint() {
        let db = rollgate_testkit::TestDb::sqlite();
        let store = db.store(Default::default()).await;
        let pool = store.pool();
        let now = Utc::now();
        mine(&pool, "h", now).await;
        let other = claim(&pool, "alice", "k", "other", now).await;
        assert!(matches!(other, Err(p) if p.status == 422));
        // After the TTL the record is gone and the key is free again.
        let later = now + chrono::Duration::hours(TTL_HOURS) + chrono::Duration::seconds(1);
        mine(&pool, "other", later).await;
    }
}
