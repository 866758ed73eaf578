//! JSON request bodies: the media type is checked (415), the size bounded (413), malformed
//! JSON refused (400) and unknown or invalid fields named (422), all as problem+json.
//! The raw bytes are kept for the idempotency fingerprint.

use std::future::Future;
use std::pin::Pin;

use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use serde::de::DeserializeOwned;

use crate::problem::Problem;
use crate::AppState;

/// A parsed JSON body with its raw bytes.
pub struct Json<T> {
    pub value: T,
    pub raw: web::Bytes,
}

/// A body that may be absent (empty) for commands that take no input; if present it must
/// be a JSON object matching `T`.
pub struct OptionalJson<T> {
    pub value: Option<T>,
    pub raw: web::Bytes,
}

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

async fn read_limited(req: &HttpRequest, payload: &mut Payload) -> Result<web::Bytes, Problem> {
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
    serde_json::from_slice::<serde::de::IgnoredAny>(raw)
        .map_err(|e| Problem::bad_request(format!("malformed JSON: {e}")))?;
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

/// serde's messages end with " at line L column C"; the field path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = Problem;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Problem>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            if !is_json(&req) {
                return Err(Problem::unsupported_media_type());
            }
            let raw = read_limited(&req, &mut payload).await?;
            let value = parse(&raw)?;
            Ok(Json { value, raw })
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for OptionalJson<T> {
    type Error = Problem;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Problem>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let raw = read_limited(&req, &mut payload).await?;
            if raw.iter().all(u8::is_ascii_whitespace) {
                return Ok(OptionalJson { value: None, raw });
            }
            if !is_json(&req) {
                return Err(Problem::unsupported_media_type());
            }
            let value = parse(&raw)?;
            Ok(OptionalJson {
                value: Some(value),
                raw,
            })
        })
    }
}
