//! `Idempotency-Key` on POST: the first answer to a (caller, key) is stored durably and
//! replayed for a retry with the same request; the same key with another request is a 422.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use rollgate_store::DatabasePool;
use sha2::{Digest, Sha256};

use crate::problem::Problem;

pub const HEADER: &str = "idempotency-key";

/// An answer as it is stored and replayed.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub etag: Option<String>,
    pub location: Option<String>,
    pub body: serde_json::Value,
}

impl Reply {
    pub fn ok(body: serde_json::Value) -> Self {
        Reply {
            status: StatusCode::OK,
            etag: None,
            location: None,
            body,
        }
    }

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
            r.content_type(crate::problem::PROBLEM_JSON).json(self.body)
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
    New,
    Replay(Reply),
}

fn key_of(req: &HttpRequest) -> Result<Option<String>, Problem> {
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

fn fingerprint(req: &HttpRequest, body: &[u8]) -> String {
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
    now: chrono::DateTime<chrono::Utc>,
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
    match claim(pool, principal, &key, &hash, now).await? {
        Claim::Replay(reply) => return Ok(reply.into_response()),
        Claim::New => {}
    }
    let outcome = handle().await;
    let reply = match &outcome {
        Ok(reply) => reply.clone(),
        Err(p) if p.status < 500 => Reply::from_problem(p),
        Err(_) => {
            // A server fault is not an answer: let the client retry with the same key.
            release(pool, principal, &key).await;
            return outcome.map(Reply::into_response);
        }
    };
    record(pool, principal, &key, &reply).await?;
    outcome.map(Reply::into_response)
}

async fn claim(
    pool: &DatabasePool,
    principal: &str,
    key: &str,
    hash: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Claim, Problem> {
    let inserted = match pool {
        DatabasePool::Postgres(p) => sqlx::query(
            "INSERT INTO idempotency_records (principal, key, request_hash, status, body, created_at) \
             VALUES ($1, $2, $3, 0, '', $4) ON CONFLICT DO NOTHING",
        )
        .bind(principal)
        .bind(key)
        .bind(hash)
        .bind(now)
        .execute(p)
        .await
        .map(|r| r.rows_affected()),
        DatabasePool::Sqlite(p) => sqlx::query(
            "INSERT INTO idempotency_records (principal, key, request_hash, status, body, created_at) \
             VALUES (?, ?, ?, 0, '', ?) ON CONFLICT DO NOTHING",
        )
        .bind(principal)
        .bind(key)
        .bind(hash)
        .bind(rollgate_store::chain::format_time(&now))
        .execute(p)
        .await
        .map(|r| r.rows_affected()),
    }
    .map_err(db_problem)?;
    if inserted == 1 || take_over_stale(pool, principal, key, hash, now).await? {
        return Ok(Claim::New);
    }
    type Row = (String, i32, Option<String>, Option<String>, String);
    let row: Row = match pool {
        DatabasePool::Postgres(p) => {
            sqlx::query_as(
                "SELECT request_hash, status, etag, location, body FROM idempotency_records \
             WHERE principal = $1 AND key = $2",
            )
            .bind(principal)
            .bind(key)
            .fetch_one(p)
            .await
        }
        DatabasePool::Sqlite(p) => {
            sqlx::query_as(
                "SELECT request_hash, status, etag, location, body FROM idempotency_records \
             WHERE principal = ? AND key = ?",
            )
            .bind(principal)
            .bind(key)
            .fetch_one(p)
            .await
        }
    }
    .map_err(db_problem)?;
    let (stored_hash, status, etag, location, body) = row;
    if stored_hash != hash {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "Idempotency key reused",
            "this Idempotency-Key was already used for a different request",
        ));
    }
    if status == 0 {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "idempotency-in-progress",
            "Request in progress",
            "a request with this Idempotency-Key is still being handled; retry shortly",
        ));
    }
    Ok(Claim::Replay(Reply {
        status: StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK),
        etag,
        location,
        body: serde_json::from_str(&body).unwrap_or_default(),
    }))
}

/// How long a claim may stay unanswered before it is presumed abandoned (the process that
/// took it died) and a retry may take it over.
pub const STALE_CLAIM_SECONDS: i64 = 300;

/// Takes over a claim left in progress by a process that died before answering.
async fn take_over_stale(
    pool: &DatabasePool,
    principal: &str,
    key: &str,
    hash: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<bool, Problem> {
    let stale_before = now - chrono::Duration::seconds(STALE_CLAIM_SECONDS);
    let updated = match pool {
        DatabasePool::Postgres(p) => sqlx::query(
            "UPDATE idempotency_records SET request_hash = $3, created_at = $4 \
             WHERE principal = $1 AND key = $2 AND status = 0 AND created_at < $5",
        )
        .bind(principal)
        .bind(key)
        .bind(hash)
        .bind(now)
        .bind(stale_before)
        .execute(p)
        .await
        .map(|r| r.rows_affected()),
        DatabasePool::Sqlite(p) => sqlx::query(
            "UPDATE idempotency_records SET request_hash = ?3, created_at = ?4 \
             WHERE principal = ?1 AND key = ?2 AND status = 0 AND created_at < ?5",
        )
        .bind(principal)
        .bind(key)
        .bind(hash)
        .bind(rollgate_store::chain::format_time(&now))
        .bind(rollgate_store::chain::format_time(&stale_before))
        .execute(p)
        .await
        .map(|r| r.rows_affected()),
    }
    .map_err(db_problem)?;
    Ok(updated == 1)
}

async fn record(
    pool: &DatabasePool,
    principal: &str,
    key: &str,
    reply: &Reply,
) -> Result<(), Problem> {
    let body = reply.body.to_string();
    let status = reply.status.as_u16() as i32;
    match pool {
        DatabasePool::Postgres(p) => sqlx::query(
            "UPDATE idempotency_records SET status = $3, etag = $4, location = $5, body = $6 \
             WHERE principal = $1 AND key = $2",
        )
        .bind(principal)
        .bind(key)
        .bind(status)
        .bind(&reply.etag)
        .bind(&reply.location)
        .bind(&body)
        .execute(p)
        .await
        .map(|_| ()),
        DatabasePool::Sqlite(p) => sqlx::query(
            "UPDATE idempotency_records SET status = ?3, etag = ?4, location = ?5, body = ?6 \
             WHERE principal = ?1 AND key = ?2",
        )
        .bind(principal)
        .bind(key)
        .bind(status)
        .bind(&reply.etag)
        .bind(&reply.location)
        .bind(&body)
        .execute(p)
        .await
        .map(|_| ()),
    }
    .map_err(db_problem)
}

async fn release(pool: &DatabasePool, principal: &str, key: &str) {
    let result = match pool {
        DatabasePool::Postgres(p) => {
            sqlx::query("DELETE FROM idempotency_records WHERE principal = $1 AND key = $2")
                .bind(principal)
                .bind(key)
                .execute(p)
                .await
                .map(|_| ())
        }
        DatabasePool::Sqlite(p) => {
            sqlx::query("DELETE FROM idempotency_records WHERE principal = ? AND key = ?")
                .bind(principal)
                .bind(key)
                .execute(p)
                .await
                .map(|_| ())
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot release an idempotency key");
    }
}

fn db_problem(e: sqlx::Error) -> Problem {
    Problem::from(rollgate_store::StoreError::from(e))
}
