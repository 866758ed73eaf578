//! A client for Prometheus' HTTP API: instant queries (`/api/v1/query`) and query validation.
//!
//! Shapes follow prometheus/prometheus `docs/querying/api.md`: the envelope is
//! `{"status":"success"|"error","data":…,"errorType":…,"error":…,"warnings":[…]}`, an instant
//! query's `data` is `{"resultType":"vector"|"scalar"|"matrix"|"string","result":…}`, and sample
//! values are strings (so `"NaN"` and `"+Inf"` can travel). A guardrail needs one number: a
//! scalar, or an instant vector holding exactly one series. Everything else is a typed
//! [`QueryError`], which the evaluator records as inconclusive: an error is never a pass.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;

/// How rollgate authenticates to Prometheus.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Auth {
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic …`.
    Basic { username: String, password: String },
}

impl std::fmt::Debug for Auth {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

/// The server-level connection (`--prometheus-url`, credentials, `--prometheus-timeout-ms`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrometheusConfig {
    /// Base URL, e.g. `http://prometheus:9090` (a path prefix such as `/prom` is kept).
    pub url: String,
    pub auth: Auth,
    /// The longest one query may take, end to end. It is also sent to Prometheus as the
    /// query's `timeout` parameter.
    pub timeout: Duration,
}

impl PrometheusConfig {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    pub fn new(url: impl Into<String>) -> Self {
        PrometheusConfig {
            url: url.into(),
            auth: Auth::None,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// The configuration cannot make a client.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the Prometheus URL {0:?} must start with http:// (https needs a TLS-enabled build)")]
    Scheme(String),
    #[error("the Prometheus URL {url:?} is not a valid URL: {reason}")]
    Url { url: String, reason: String },
    #[error("the Prometheus timeout must be between 1 ms and 10 minutes")]
    Timeout,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Why an instant query gave no usable number. Each is recorded as an inconclusive reading
/// with [`QueryError::code`] and the message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("Prometheus did not answer within {0} ms")]
    Timeout(u128),
    #[error("cannot reach Prometheus: {0}")]
    Unreachable(String),
    /// The API's own error object (`errorType` is e.g. `bad_data`, `execution`, `timeout`).
    #[error("Prometheus refused the query (HTTP {status}, {error_type}): {message}")]
    Api {
        status: u16,
        error_type: String,
        message: String,
    },
    /// A non-2xx answer that is not an API error object (a proxy, an auth gateway, …).
    #[error("Prometheus answered HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("unreadable answer from Prometheus: {0}")]
    Decode(String),
    #[error("the query returned no series")]
    NoData,
    #[error("the query returned {0} series; aggregate it to one (for example with sum(...))")]
    ManySeries(usize),
    #[error("the query returned a {0} result; a guardrail needs a scalar or an instant vector")]
    WrongResultType(String),
    #[error("the query returned {0}, not a finite number")]
    NotFinite(String),
}

impl QueryError {
    /// A stable short code for metrics and recorded reasons.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Unreachable(_) => "unreachable",
            Self::Api { error_type, .. } if error_type == "timeout" => "timeout",
            Self::Api { error_type, .. } if error_type == "bad_data" => "bad_data",
            Self::Api { .. } => "api_error",
            Self::Http { .. } => "http_error",
            Self::Decode(_) => "decode",
            Self::NoData => "no_data",
            Self::ManySeries(_) => "many_series",
            Self::WrongResultType(_) => "wrong_result_type",
            Self::NotFinite(_) => "not_finite",
        }
    }
}

/// One number and the time Prometheus evaluated it at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub value: f64,
    pub at: DateTime<Utc>,
}

/// What an instant query answered, before it is reduced to one number.
#[derive(Clone, Debug, PartialEq)]
pub enum InstantResult {
    Scalar { at: f64, value: String },
    Vector(Vec<Series>),
    Matrix(usize),
    String(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub at: f64,
    pub value: String,
}

impl InstantResult {
    /// The one finite number a guardrail needs, or why there is none.
    pub fn single(&self) -> Result<Sample, QueryError> {
        let (at, raw) = match self {
            Self::Scalar { at, value } => (*at, value.as_str()),
            Self::Vector(series) => match series.as_slice() {
                [] => return Err(QueryError::NoData),
                [one] => (one.at, one.value.as_str()),
                many => return Err(QueryError::ManySeries(many.len())),
            },
            Self::Matrix(_) => return Err(QueryError::WrongResultType("matrix".into())),
            Self::String(_) => return Err(QueryError::WrongResultType("string".into())),
        };
        let value = parse_value(raw)?;
        if !value.is_finite() {
            return Err(QueryError::NotFinite(raw.to_owned()));
        }
        Ok(Sample {
            value,
            at: unix_to_time(at),
        })
    }
}

/// Sample values are Go float strings: `"1.5"`, `"NaN"`, `"+Inf"`, `"-Inf"`.
fn parse_value(raw: &str) -> Result<f64, QueryError> {
    match raw {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => raw
            .parse::<f64>()
            .map_err(|_| QueryError::Decode(format!("sample value {raw:?} is not a number"))),
    }
}

fn unix_to_time(secs: f64) -> DateTime<Utc> {
    let millis = (secs * 1000.0).round() as i64;
    Utc.timestamp_millis_opt(millis)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// `time` as Prometheus takes it: Unix seconds with millisecond decimals.
pub fn time_param(at: DateTime<Utc>) -> String {
    let ms = at.timestamp_millis();
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Value,
    #[serde(rename = "errorType", default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct QueryData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Value,
}

#[derive(Deserialize)]
struct RawSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    /// Absent for native histogram samples (`histogram`), which a guardrail cannot use.
    #[serde(default)]
    value: Option<(f64, String)>,
}

/// Decodes an instant query answer (status already known to be 2xx or an API error).
pub fn decode_query_answer(status: u16, body: &[u8]) -> Result<InstantResult, QueryError> {
    let envelope: Envelope = match serde_json::from_slice(body) {
        Ok(e) => e,
        Err(_) if !(200..300).contains(&status) => {
            return Err(QueryError::Http {
                status,
                body: excerpt(body),
            })
        }
        Err(e) => return Err(QueryError::Decode(e.to_string())),
    };
    if envelope.status != "success" {
        return Err(QueryError::Api {
            status,
            error_type: envelope.error_type.unwrap_or_else(|| "unknown".into()),
            message: envelope.error.unwrap_or_default(),
        });
    }
    let data: QueryData =
        serde_json::from_value(envelope.data).map_err(|e| QueryError::Decode(e.to_string()))?;
    let decode = |e: serde_json::Error| QueryError::Decode(format!("{}: {e}", data.result_type));
    match data.result_type.as_str() {
        "scalar" => {
            let (at, value): (f64, String) =
                serde_json::from_value(data.result.clone()).map_err(decode)?;
            Ok(InstantResult::Scalar { at, value })
        }
        "string" => {
            let (_, value): (f64, String) =
                serde_json::from_value(data.result.clone()).map_err(decode)?;
            Ok(InstantResult::String(value))
        }
        "matrix" => {
            let series: Vec<Value> = serde_json::from_value(data.result.clone()).map_err(decode)?;
            Ok(InstantResult::Matrix(series.len()))
        }
        "vector" => {
            let raw: Vec<RawSeries> =
                serde_json::from_value(data.result.clone()).map_err(decode)?;
            raw.into_iter()
                .map(|s| match s.value {
                    Some((at, value)) => Ok(Series {
                        labels: s.metric,
                        at,
                        value,
                    }),
                    None => Err(QueryError::WrongResultType("native histogram".into())),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(InstantResult::Vector)
        }
        other => Err(QueryError::Decode(format!("unknown resultType {other:?}"))),
    }
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Why a query was not accepted as a guardrail query.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationFailure {
    /// Prometheus' parser refused it, or it cannot yield one number.
    #[error("{0}")]
    Invalid(String),
    /// Prometheus could not be asked.
    #[error("cannot validate the query: {0}")]
    Unavailable(QueryError),
}

/// A Prometheus HTTP API client.
#[derive(Clone, Debug)]
pub struct Prometheus {
    http: reqwest::Client,
    base: String,
    auth: Auth,
    timeout: Duration,
}

/// Far in the past: a query evaluated there touches no data, so only parsing and typing errors
/// remain (the fallback for Prometheus versions without `/api/v1/parse_query`).
const VALIDATION_TIME: &str = "1";

impl Prometheus {
    pub fn new(config: PrometheusConfig) -> Result<Self, ConfigError> {
        let url = config.url.trim().trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&url).map_err(|e| ConfigError::Url {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        if parsed.scheme() != "http" {
            return Err(ConfigError::Scheme(url));
        }
        if config.timeout < Duration::from_millis(1) || config.timeout > Duration::from_secs(600) {
            return Err(ConfigError::Timeout);
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        Ok(Prometheus {
            http,
            base: url,
            auth: config.auth,
            timeout: config.timeout,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn post(&self, path: &str, form: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let req = self.http.post(format!("{}{path}", self.base)).form(form);
        match &self.auth {
            Auth::None => req,
            Auth::Bearer(token) => req.bearer_auth(token),
            Auth::Basic { username, password } => req.basic_auth(username, Some(password)),
        }
    }

    async fn send(&self, path: &str, form: &[(&str, &str)]) -> Result<(u16, Vec<u8>), QueryError> {
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                QueryError::Timeout(self.timeout.as_millis())
            } else {
                QueryError::Unreachable(error_chain(&e))
            }
        };
        let response = self.post(path, form).send().await.map_err(transport)?;
        let status = response.status();
        let body = response.bytes().await.map_err(transport)?;
        Ok((status.as_u16(), body.to_vec()))
    }

    /// Evaluates `query` at `at` (`POST /api/v1/query`, form-encoded).
    pub async fn instant(
        &self,
        query: &str,
        at: DateTime<Utc>,
    ) -> Result<InstantResult, QueryError> {
        self.instant_at(query, &time_param(at)).await
    }

    async fn instant_at(&self, query: &str, time: &str) -> Result<InstantResult, QueryError> {
        let timeout = format!("{}ms", self.timeout.as_millis());
        let (status, body) = self
            .send(
                "/api/v1/query",
                &[("query", query), ("time", time), ("timeout", &timeout)],
            )
            .await?;
        decode_query_answer(status, &body)
    }

    /// Evaluates `query` at `at` and reduces it to one finite number.
    pub async fn value(&self, query: &str, at: DateTime<Utc>) -> Result<Sample, QueryError> {
        self.instant(query, at).await?.single()
    }

    /// Checks that `query` parses and yields a scalar or an instant vector.
    ///
    /// `/api/v1/parse_query` is asked first where Prometheus has it; on versions without it
    /// (404, e.g. 2.42) the query is evaluated at a time far in the past, where a parse error
    /// is reported as `errorType: bad_data`.
    pub async fn validate(&self, query: &str) -> Result<(), ValidationFailure> {
        if query.trim().is_empty() {
            return Err(ValidationFailure::Invalid("must not be empty".into()));
        }
        let (status, body) = self
            .send("/api/v1/parse_query", &[("query", query)])
            .await
            .map_err(ValidationFailure::Unavailable)?;
        if status != StatusCode::NOT_FOUND.as_u16() {
            parse_answer(status, &body)?;
        }
        match self.instant_at(query, VALIDATION_TIME).await {
            Ok(InstantResult::Scalar { .. } | InstantResult::Vector(_)) => Ok(()),
            Ok(InstantResult::Matrix(_)) => Err(ValidationFailure::Invalid(
                "the query returns a range vector; a guardrail needs a scalar or an instant vector"
                    .into(),
            )),
            Ok(InstantResult::String(_)) => Err(ValidationFailure::Invalid(
                "the query returns a string; a guardrail needs a scalar or an instant vector"
                    .into(),
            )),
            Err(QueryError::Api {
                error_type,
                message,
                ..
            }) if error_type == "bad_data" => Err(ValidationFailure::Invalid(message)),
            Err(e) => Err(ValidationFailure::Unavailable(e)),
        }
    }
}

/// The answer of `/api/v1/parse_query`: success, or `bad_data` for a query that does not parse.
fn parse_answer(status: u16, body: &[u8]) -> Result<(), ValidationFailure> {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(e) if e.status == "success" => Ok(()),
        Ok(e) if e.error_type.as_deref() == Some("bad_data") => {
            Err(ValidationFailure::Invalid(e.error.unwrap_or_default()))
        }
        Ok(e) => Err(ValidationFailure::Unavailable(QueryError::Api {
            status,
            error_type: e.error_type.unwrap_or_else(|| "unknown".into()),
            message: e.error.unwrap_or_default(),
        })),
        Err(_) => Err(ValidationFailure::Unavailable(QueryError::Http {
            status,
            body: excerpt(body),
        })),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_param_has_millisecond_decimals() {
        let t = Utc.timestamp_millis_opt(1_435_781_451_781).unwrap();
        assert_eq!(time_param(t), "1435781451.781");
        let t = Utc.timestamp_millis_opt(5).unwrap();
        assert_eq!(time_param(t), "0.005");
    }

    #[test]
    fn special_values_parse_and_are_not_finite() {
        assert!(parse_value("NaN").unwrap().is_nan());
        assert_eq!(parse_value("+Inf").unwrap(), f64::INFINITY);
        assert_eq!(parse_value("-Inf").unwrap(), f64::NEG_INFINITY);
        assert_eq!(parse_value("0.25").unwrap(), 0.25);
        assert!(matches!(parse_value("abc"), Err(QueryError::Decode(_))));
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let a = Auth::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{a:?}").contains("hunter2"));
        assert!(!format!("{:?}", Auth::Bearer("tok".into())).contains("tok"));
    }

    #[test]
    fn only_http_urls_with_a_sane_timeout() {
        assert!(matches!(
            Prometheus::new(PrometheusConfig::new("ftp://x")),
            Err(ConfigError::Scheme(_))
        ));
        assert!(matches!(
            Prometheus::new(PrometheusConfig::new("not a url")),
            Err(ConfigError::Url { .. })
        ));
        let mut c = PrometheusConfig::new("http://127.0.0.1:9090/");
        c.timeout = Duration::ZERO;
        assert!(matches!(Prometheus::new(c), Err(ConfigError::Timeout)));
        let p = Prometheus::new(PrometheusConfig::new("http://127.0.0.1:9090/prom/")).unwrap();
        assert_eq!(p.base_url(), "http://127.0.0.1:9090/prom");
    }
}
