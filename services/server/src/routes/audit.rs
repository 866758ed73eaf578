//! The whole-log audit endpoints:
//!
//! - `GET /v1/audit/export?format=ndjson|csv[&from_position=N][&to_position=M]`: every
//!   stored envelope field of each event, streamed page by page in constant memory.
//! - `GET /v1/audit/verify[?position=N&hash=H]`: recomputes the hash chain of the database.
//! - `GET /v1/audit/head`: the head (position and chain hash) to keep for later checks.
//!
//! All three read the whole log across teams (a team-scoped export would have holes and
//! break the chain), so they answer only callers whose teams claim is `*` and who hold the
//! `auditor` or `governance_admin` role; anyone else gets a 403 `forbidden` problem with
//! rule `permission`.

use actix_web::http::header;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use rollgate_domain::{Role, TeamScope};
use rollgate_store::Head;
use serde::Deserialize;

use crate::export::{export_stream, ExportFormat, ExportRange};
use crate::http::caller::Caller;
use crate::http::problem::Problem;
use crate::http::query::{Count, Query};
use crate::state::AppState;

/// Whole-log reads: teams `*` and the auditor or governance_admin role.
pub fn require_whole_log_reader(caller: &Caller) -> Result<(), Problem> {
    let all_teams = matches!(caller.actor.teams, TeamScope::All);
    let role = caller
        .actor
        .has_any_role(&[Role::Auditor, Role::GovernanceAdmin]);
    if all_teams && role {
        return Ok(());
    }
    let detail = if !role {
        "the whole-log audit endpoints need the auditor or governance_admin role"
    } else {
        "the whole-log audit endpoints cover every team: they need the teams claim `*` \
         (an export limited to some teams would break the hash chain)"
    };
    Err(Problem::forbidden(detail).with_rule("permission"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    pub format: Option<String>,
    pub from_position: Option<Count>,
    pub to_position: Option<Count>,
}

/// `GET /v1/audit/export`.
pub async fn export(
    state: web::Data<AppState>,
    caller: Caller,
    query: Query<ExportQuery>,
) -> Result<HttpResponse, Problem> {
    require_whole_log_reader(&caller)?;
    let format = match query.format.as_deref() {
        None | Some("ndjson") => ExportFormat::Ndjson,
        Some("csv") => ExportFormat::Csv,
        Some(other) => {
            return Err(Problem::invalid_field(
                "format",
                format!("{other:?} is not an export format (ndjson, csv)"),
            ))
        }
    };
    let head = state.store.head().await?;
    let (from, to) = (query.from_position.as_ref(), query.to_position.as_ref());
    let range = ExportRange::new(from.map(|c| c.0), to.map(|c| c.0), head.position)
        .map_err(|m| Problem::invalid_field("from_position", m))?;
    let filename = format!(
        "rollgate-audit-{}-{}.{}",
        range.from,
        range.to,
        format.extension()
    );
    let body =
        futures::StreamExt::map(export_stream(state.store.clone(), format, range), |chunk| {
            chunk.map(Bytes::from).map_err(|e| {
                tracing::error!(error = %e, "audit export failed mid-stream");
                actix_web::error::ErrorInternalServerError("audit export failed")
            })
        });
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyQuery {
    pub position: Option<Count>,
    pub hash: Option<String>,
}

/// `GET /v1/audit/verify`: 200 with the report, whether the chain is intact or not.
pub async fn verify(
    state: web::Data<AppState>,
    caller: Caller,
    query: Query<VerifyQuery>,
) -> Result<HttpResponse, Problem> {
    require_whole_log_reader(&caller)?;
    let exported = match (query.position.as_ref().map(|c| c.0), &query.hash) {
        (None, None) => None,
        (Some(position), Some(hash)) => {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Problem::invalid_field(
                    "hash",
                    "must be a SHA-256 chain hash (64 hex digits)",
                ));
            }
            Some(Head {
                position,
                hash: hash.clone(),
            })
        }
        (Some(_), None) => {
            return Err(Problem::invalid_field(
                "hash",
                "an exported head needs both position and hash",
            ))
        }
        (None, Some(_)) => {
            return Err(Problem::invalid_field(
                "position",
                "an exported head needs both position and hash",
            ))
        }
    };
    let report = rollgate_store::verify(&*state.store, exported.as_ref()).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// `GET /v1/audit/head`.
pub async fn head(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, Problem> {
    require_whole_log_reader(&caller)?;
    let head = state.store.head().await?;
    Ok(HttpResponse::Ok().json(head))
}
