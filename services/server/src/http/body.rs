//! JSON request bodies: the size bounded (413), the media type checked (415), malformed
//! JSON refused (400) and unknown or invalid fields named (422), all as problem+json.
//! The extractors of [`crate::http::extract`] keep the raw bytes for the idempotency
//! fingerprint and parse them with [`json`] or [`optional_json`].

use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{dev::Payload, web, HttpRequest};
use serde::de::DeserializeOwned;

use crate::http::problem::Problem;
use crate::state::AppState;

fn is_json(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// The request body, at most `--max-body-bytes` long (413 beyond).
pub async fn read_limited(req: &HttpRequest, payload: &mut Payload) -> Result<web::Bytes, Problem> {
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.max_body_bytes)
        .unwrap_or(256 * 1024);
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(Problem::payload_too_large(limit));
        }
    }
    use futures::StreamExt;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| match e {
            PayloadError::Overflow => Problem::payload_too_large(limit),
            other => Problem::bad_request(format!("cannot read the request body: {other}")),
        })?;
        if body.len() + chunk.len() > limit {
            return Err(Problem::payload_too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses JSON, naming the path of the offending field.
pub fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, Problem> {
    // Syntax first: a body that is not one JSON document (truncated, trailing bytes) is
    // malformed (400) whatever its fields would have said.
    let doc = serde_json::from_slice::<serde_json::Value>(raw)
        .map_err(|e| Problem::bad_request(format!("malformed JSON: {e}")))?;
    // PostgreSQL cannot store U+0000 in text or jsonb: refuse it in every string, on every
    // backend alike, rather than fail at the database.
    if let Some(field) = nul_at(&doc, "") {
        return Err(Problem::invalid_field(
            if field.is_empty() {
                "body".to_owned()
            } else {
                field
            },
            "must not contain NUL characters (\\u0000)",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(raw);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." { "body".to_owned() } else { path };
                let message = strip_position(&inner.to_string());
                Problem::invalid_field(field, message)
            }
            _ => Problem::bad_request(format!("malformed JSON: {inner}")),
        }
    })
}

/// The path of the first string (key or value) holding U+0000, if any.
fn nul_at(v: &serde_json::Value, path: &str) -> Option<String> {
    match v {
        serde_json::Value::String(s) => s.contains('\0').then(|| path.to_owned()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_at(x, &format!("{path}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(k, x)| {
            let here = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if k.contains('\0') {
                Some(here)
            } else {
                nul_at(x, &here)
            }
        }),
        _ => None,
    }
}

/// serde's messages end with " at line L column C"; the field path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// A JSON body: 415 without a JSON media type, then as [`parse`].
pub fn json<T: DeserializeOwned>(req: &HttpRequest, raw: &[u8]) -> Result<T, Problem> {
    if !is_json(req) {
        return Err(Problem::unsupported_media_type());
    }
    parse(raw)
}

/// A body that may be absent (empty) for commands that take no input; if present it must
/// be JSON matching `T`.
pub fn optional_json<T: DeserializeOwned>(
    req: &HttpRequest,
    raw: &[u8],
) -> Result<Option<T>, Problem> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    json(req, raw).map(Some)
}
