//! Liveness and readiness.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::state::AppState;

/// The process is up.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// The process can serve: the database answers. Also reports how far the read models lag
/// behind the log (`projection.lag`, in events); a lag alone never makes the instance
/// unready, since reads with `min_position` wait for it. Positions and database errors are
/// logged, never answered: this endpoint is open to unauthenticated callers.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => {
            let head = match state.store.head().await {
                Ok(h) => Some(h.position),
                Err(e) => {
                    tracing::warn!(error = %e, "readiness: cannot read the log head");
                    None
                }
            };
            // The checkpoints in the database: with several instances, any of them may
            // have moved them. This instance's projector's view when they cannot be read.
            let projected = rollgate_projections::projected_position(&state.store.pool())
                .await
                .unwrap_or_else(|_| state.projector.position());
            let lag = head.map(|h| h.saturating_sub(projected));
            tracing::debug!(?head, projected, ?lag, "readiness");
            HttpResponse::Ok().json(json!({
                "status": "ready",
                "database": "ok",
                "projection": { "lag": lag },
            }))
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            HttpResponse::ServiceUnavailable()
                .insert_header(("Retry-After", "5"))
                .json(json!({ "status": "unavailable", "database": "unavailable" }))
        }
    }
}

/// The API contract, as served to clients.
pub const OPENAPI_YAML: &str = include_str!("../../../../api-spec/openapi.yaml");

/// `GET /openapi.yaml`.
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/yaml")
        .body(OPENAPI_YAML)
}

/// `GET /metrics` in the Prometheus text format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
