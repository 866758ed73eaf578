//! RFC 9457 problem details: the one error type of the API, with the status mapping in one
//! place. Every client mistake becomes a problem with a stable `type`; server faults are
//! logged with their cause and answered without it.

use std::fmt;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use rollgate_auth::AuthError;
use rollgate_domain::{DomainError, ErrorKind};
use rollgate_store::StoreError;
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every problem type the API answers, named once: its `type` URI slug, title and status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProblemType {
    MalformedRequest,
    Validation,
    Unauthenticated,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    RuleRefused,
    StateConflict,
    VersionConflict,
    IdempotencyKeyReused,
    IdempotencyMismatch,
    PreconditionFailed,
    PreconditionRequired,
    PayloadTooLarge,
    EventTooLarge,
    UnsupportedMediaType,
    TooManyRequests,
    Internal,
    Unavailable,
}

impl ProblemType {
    pub const ALL: [ProblemType; 19] = [
        Self::MalformedRequest,
        Self::Validation,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::RuleRefused,
        Self::StateConflict,
        Self::VersionConflict,
        Self::IdempotencyKeyReused,
        Self::IdempotencyMismatch,
        Self::PreconditionFailed,
        Self::PreconditionRequired,
        Self::PayloadTooLarge,
        Self::EventTooLarge,
        Self::UnsupportedMediaType,
        Self::TooManyRequests,
        Self::Internal,
        Self::Unavailable,
    ];

    /// (slug, title, status).
    const fn parts(self) -> (&'static str, &'static str, StatusCode) {
        match self {
            Self::MalformedRequest => (
                "malformed-request",
                "Malformed request",
                StatusCode::BAD_REQUEST,
            ),
            Self::Validation => (
                "validation",
                "Invalid request",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            Self::Unauthenticated => (
                "unauthenticated",
                "Unauthenticated",
                StatusCode::UNAUTHORIZED,
            ),
            Self::Forbidden => ("forbidden", "Forbidden", StatusCode::FORBIDDEN),
            Self::NotFound => ("not-found", "Not found", StatusCode::NOT_FOUND),
            Self::MethodNotAllowed => (
                "method-not-allowed",
                "Method not allowed",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            Self::RuleRefused => (
                "rule-refused",
                "Refused by a governance rule",
                StatusCode::CONFLICT,
            ),
            Self::StateConflict => ("state-conflict", "Conflict", StatusCode::CONFLICT),
            Self::VersionConflict => ("version-conflict", "Version conflict", StatusCode::CONFLICT),
            Self::IdempotencyKeyReused => (
                "idempotency-key-reused",
                "Idempotency key reused",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            Self::IdempotencyMismatch => (
                "idempotency-mismatch",
                "Idempotency mismatch",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            Self::PreconditionFailed => (
                "precondition-failed",
                "Precondition failed",
                StatusCode::PRECONDITION_FAILED,
            ),
            Self::PreconditionRequired => (
                "precondition-required",
                "Precondition required",
                StatusCode::PRECONDITION_REQUIRED,
            ),
            Self::PayloadTooLarge => (
                "payload-too-large",
                "Payload too large",
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            Self::EventTooLarge => (
                "event-too-large",
                "Event too large",
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            Self::UnsupportedMediaType => (
                "unsupported-media-type",
                "Unsupported media type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            Self::TooManyRequests => (
                "too-many-requests",
                "Too many requests",
                StatusCode::TOO_MANY_REQUESTS,
            ),
            Self::Internal => (
                "internal",
                "Internal error",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            Self::Unavailable => (
                "unavailable",
                "Service unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        }
    }

    pub const fn slug(self) -> &'static str {
        self.parts().0
    }

    pub const fn title(self) -> &'static str {
        self.parts().1
    }

    pub const fn status(self) -> StatusCode {
        self.parts().2
    }

    /// The `type` member: `urn:rollgate:problem:<slug>`.
    pub fn uri(self) -> String {
        format!("urn:rollgate:problem:{}", self.slug())
    }
}

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// A problem answer. Boxed so that `Result<_, Problem>` stays small on the happy path.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Problem(Box<ProblemDetails>);

impl std::ops::Deref for Problem {
    type Target = ProblemDetails;
    fn deref(&self) -> &ProblemDetails {
        &self.0
    }
}

impl std::ops::DerefMut for Problem {
    fn deref_mut(&mut self) -> &mut ProblemDetails {
        &mut self.0
    }
}

/// The RFC 9457 members, plus rollgate's extensions.
#[derive(Debug, Clone, Serialize)]
pub struct ProblemDetails {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The governance rule that refused the request (e.g. `"R2"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// For validation problems: each invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// For version conflicts: the stream's current version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    #[serde(skip)]
    pub retry_after: Option<u64>,
    /// For 405: the methods the path answers (the `Allow` header).
    #[serde(skip)]
    pub allow: Option<String>,
}

impl Problem {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Problem(Box::new(ProblemDetails {
            type_uri: kind.uri(),
            title: kind.title().to_owned(),
            status: kind.status().as_u16(),
            detail: detail.into(),
            instance: None,
            rule: None,
            errors: Vec::new(),
            current_version: None,
            retry_after: None,
            allow: None,
        }))
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::MalformedRequest, detail)
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let mut p = Self::new(ProblemType::Validation, detail);
        p.errors = errors;
        p
    }

    /// Every violation of a domain validation, each as a named field.
    pub fn invalid(errors: rollgate_domain::ValidationErrors) -> Self {
        Self::validation(
            errors
                .0
                .into_iter()
                .map(|v| FieldError {
                    field: v.field,
                    message: v.message,
                })
                .collect(),
        )
    }

    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    pub fn unauthenticated(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Unauthenticated, detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::Forbidden, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemType::NotFound, detail)
    }

    /// R11: the one answer for a rollout that does not exist and for one of another team,
    /// so the two can never be told apart.
    pub fn rollout_not_found() -> Self {
        DomainError::RolloutNotFound.into()
    }

    /// 405 with the methods the path does answer.
    pub fn method_not_allowed(allow: impl Into<String>) -> Self {
        let allow = allow.into();
        let mut p = Self::new(
            ProblemType::MethodNotAllowed,
            format!("this resource answers {allow}"),
        );
        p.allow = Some(allow);
        p
    }

    /// 429: a limit on open connections or requests; worth retrying after `retry_after`
    /// seconds.
    pub fn too_many_requests(detail: impl Into<String>, retry_after: u64) -> Self {
        let mut p = Self::new(ProblemType::TooManyRequests, detail);
        p.retry_after = Some(retry_after);
        p
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            ProblemType::PayloadTooLarge,
            format!("the request body is over the limit of {limit} bytes"),
        )
    }

    pub fn unsupported_media_type() -> Self {
        Self::new(
            ProblemType::UnsupportedMediaType,
            "request bodies must be JSON (Content-Type: application/json)",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            ProblemType::Internal,
            "the server failed to handle the request; it has been logged",
        )
    }

    pub fn unavailable(detail: impl Into<String>, retry_after: u64) -> Self {
        let mut p = Self::new(ProblemType::Unavailable, detail);
        p.retry_after = Some(retry_after);
        p
    }

    pub fn with_rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = Some(rule.into());
        self
    }

    pub fn with_instance(mut self, instance: impl Into<String>) -> Self {
        self.instance = Some(instance.into());
        self
    }

    pub fn with_current_version(mut self, version: u64) -> Self {
        self.current_version = Some(version);
        self
    }

    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.status, self.title, self.detail)
    }
}

impl ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        Problem::status_code(self)
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(Problem::status_code(self));
        r.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        if let Some(s) = self.retry_after {
            r.insert_header((header::RETRY_AFTER, s.to_string()));
        }
        if let Some(allow) = &self.allow {
            r.insert_header((header::ALLOW, allow.as_str()));
        }
        r.body(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// A read-model failure: bad cursors and limits are the client's, an unreachable database is
/// unavailability, the rest is a logged server fault.
impl From<rollgate_projections::ProjectionError> for Problem {
    fn from(e: rollgate_projections::ProjectionError) -> Self {
        use rollgate_projections::ProjectionError;
        match e {
            ProjectionError::InvalidCursor => {
                Problem::invalid_field("cursor", "not a cursor from this endpoint")
            }
            ProjectionError::InvalidLimit => {
                Problem::invalid_field("limit", "must be between 1 and 1000")
            }
            ProjectionError::Store(e) => e.into(),
            other => {
                tracing::error!(error = %other, "read model query failed");
                Problem::internal()
            }
        }
    }
}

impl From<AuthError> for Problem {
    fn from(e: AuthError) -> Self {
        if e.is_config_error() {
            tracing::error!(error = %e, "authentication misconfigured");
            return Problem::internal();
        }
        Problem::unauthenticated(e.to_string())
    }
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::WrongExpectedVersion { current, .. } => {
                Problem::new(ProblemType::VersionConflict, e.to_string())
                    .with_current_version(current)
            }
            // The policy (or another condition stream) moved between decision and commit
            // more often than the command layer retries: the caller may try again.
            StoreError::ConditionFailed { .. } => {
                Problem::new(ProblemType::VersionConflict, e.to_string())
            }
            StoreError::EventTooLarge { .. } => {
                Problem::new(ProblemType::EventTooLarge, e.to_string())
            }
            StoreError::IdempotencyMismatch { .. } => {
                Problem::new(ProblemType::IdempotencyMismatch, e.to_string())
            }
            StoreError::Unavailable(_) | StoreError::Closed => {
                tracing::error!(error = %e, "event store unavailable");
                Problem::unavailable("the event store is unavailable", 5)
            }
            other => {
                tracing::error!(error = %other, "event store failure");
                Problem::internal()
            }
        }
    }
}

/// The one mapping of a domain refusal to its answer, driven by [`DomainError::kind`]; the
/// rule travels in `rule`. R11 refusals are 404s that never say whether the thing exists.
impl From<DomainError> for Problem {
    fn from(e: DomainError) -> Self {
        let rule = e.rule().map(|r| r.id().to_owned());
        let detail = e.to_string();
        let p = match (e.kind(), e) {
            (ErrorKind::Validation, DomainError::Validation(errors)) => Problem::invalid(errors),
            (ErrorKind::Validation, DomainError::RollbackReasonMissing) => {
                Problem::invalid_field("reason", detail)
            }
            (ErrorKind::Validation, _) => Problem::new(ProblemType::Validation, detail),
            (ErrorKind::Forbidden, _) => Problem::forbidden(detail),
            // A team outside the caller's: named by the caller, so nothing leaks, but answered
            // as a team that does not exist.
            (ErrorKind::NotFound, DomainError::TeamNotAllowed { .. }) => {
                Problem::not_found("team not found")
            }
            (ErrorKind::NotFound, _) => Problem::not_found(detail),
            (ErrorKind::Conflict, _) if rule.is_some() => {
                Problem::new(ProblemType::RuleRefused, detail)
            }
            (ErrorKind::Conflict, _) => Problem::new(ProblemType::StateConflict, detail),
        };
        match rule {
            Some(r) => p.with_rule(r),
            None => p,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_type_has_its_own_slug() {
        let slugs: std::collections::BTreeSet<_> =
            ProblemType::ALL.iter().map(|t| t.slug()).collect();
        assert_eq!(slugs.len(), ProblemType::ALL.len());
    }

    #[test]
    fn other_team_and_unknown_rollout_answer_alike() {
        let unknown = Problem::from(DomainError::RolloutNotFound);
        assert_eq!(unknown.status, 404);
        assert_eq!(unknown.rule.as_deref(), Some("R11"));
        assert_eq!(unknown.detail, "rollout not found");
    }
}
