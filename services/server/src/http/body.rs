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
    let mut de = serde_json::Deserializer::from_slice(raw);
    let doc = match serde_path_to_error::deserialize::<_, Strict>(&mut de) {
        Ok(Strict(doc)) => doc,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            return Err(match inner.classify() {
                // A key given twice: which one counts would be a guess.
                serde_json::error::Category::Data => Problem::invalid_field(
                    if path == "." { "body".to_owned() } else { path },
                    strip_position(&inner.to_string()),
                ),
                _ => Problem::bad_request(format!("malformed JSON: {inner}")),
            });
        }
    };
    de.end()
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
    serde_path_to_error::deserialize(doc).map_err(|e| {
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

/// A JSON document read into a [`serde_json::Value`] in one pass, refusing an object that
/// names a key twice (which `Value` would silently settle by keeping the last) and reading
/// integral numbers written with a fraction as integers.
struct Strict(serde_json::Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    /// JSON (and JSON Schema's `integer`) does not tell `88` from `88.0`; serde does. A
    /// number written with a zero fraction that a double holds exactly (|x| <= 2^53) is read
    /// as the integer it is, so integer fields accept it; fractions stay refused there.
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
        if v.fract() == 0.0 && v.abs() <= EXACT {
            return Ok((v as i64).into());
        }
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(items.into())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate field `{key}`"
                )));
            }
            let Strict(v) = map.next_value()?;
            fields.insert(key, v);
        }
        Ok(fields.into())
    }
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

#[cfg(test)]
mod tests {
    use super::parse;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        count: u64,
        ratio: f64,
        #[serde(default)]
        items: Vec<i64>,
    }

    #[test]
    fn integers_written_with_a_zero_fraction_are_integers() {
        let body: Body = parse(br#"{"count": 88.0, "ratio": 2.0, "items": [-3.0, 4]}"#).unwrap();
        assert_eq!(
            body,
            Body {
                count: 88,
                ratio: 2.0,
                items: vec![-3, 4]
            }
        );
    }

    #[test]
    fn fractions_and_out_of_range_values_stay_refused_with_their_field() {
        for (raw, field) in [
            (r#"{"count": 88.5, "ratio": 1}"#, "count"),
            (r#"{"count": -1.0, "ratio": 1}"#, "count"),
            (r#"{"count": 1e300, "ratio": 1}"#, "count"),
            (r#"{"count": 1, "ratio": 1, "items": [0.5]}"#, "items[0]"),
            (r#"{"count": 1, "ratio": 1, "extra": 1}"#, "body"),
            (r#"{"count": 1, "count": 2, "ratio": 1}"#, "body"),
            (
                r#"{"count": 1, "ratio": 1, "items": [{"a": 1, "a": 2}]}"#,
                "items[0]",
            ),
        ] {
            let problem = parse::<Body>(raw.as_bytes()).unwrap_err();
            assert_eq!(problem.status, 422, "{raw}");
            assert!(
                problem.errors[0].field == field || problem.detail.contains("extra"),
                "{raw}: {:?}",
                problem.errors
            );
        }
    }
}
