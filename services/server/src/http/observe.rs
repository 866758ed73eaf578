//! Request ids, request logs and per-request Prometheus metrics.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};

use crate::state::AppState;
use tracing::Instrument;
use uuid::Uuid;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Headers a client may send to label a request, recorded on the events it writes. Each,
/// when present, must be 1 to 128 visible ASCII characters (the OpenAPI document's
/// pattern); anything else is refused with 400 before the request is served.
const LABEL_HEADERS: [&str; 3] = [REQUEST_ID_HEADER, "x-correlation-id", "x-causation-id"];

fn is_label(v: &[u8]) -> bool {
    (1..=128).contains(&v.len()) && v.iter().all(|c| c.is_ascii_graphic())
}

/// The server's own id of the request being served (request extensions); it is the
/// `request_id` of the events the request writes.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The client's `X-Request-Id`, when it sent a sane one: kept apart from the server's id
/// (events record it as `client_request_id`) and echoed on the response.
#[derive(Clone, Debug)]
pub struct ClientRequestId(pub String);

/// Gives every request an id of the server's own, a tracing span carrying it (and the
/// client's `X-Request-Id`, if any), one log line when it completes, and `X-Request-Id` on
/// the response (the client's when it sent one, else the server's).
pub async fn request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    for name in LABEL_HEADERS {
        if let Some(v) = req.headers().get(name) {
            if !is_label(v.as_bytes()) {
                return Err(crate::http::problem::Problem::bad_request(format!(
                    "the {name} header must be 1 to 128 visible ASCII characters"
                ))
                .into());
            }
        }
    }
    let incoming = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let id = Uuid::new_v4().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    if let Some(client) = &incoming {
        req.extensions_mut().insert(ClientRequestId(client.clone()));
    }
    let method = req.method().to_string();
    let path = req.path().to_owned();
    let client_request_id = incoming.as_deref().unwrap_or_default();
    let span = tracing::info_span!("request", request_id = %id, %client_request_id, %method, %path);
    let started = std::time::Instant::now();
    let mut res = next.call(req).instrument(span.clone()).await?;
    let status = res.status().as_u16();
    let elapsed = started.elapsed();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    if let Some(state) = res.request().app_data::<web::Data<AppState>>() {
        state
            .metrics
            .observe_request(&route, &method, status, elapsed);
    }
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request completed"
        )
    });
    if let Ok(v) = HeaderValue::from_str(incoming.as_deref().unwrap_or(&id)) {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), v);
    }
    Ok(res)
}
