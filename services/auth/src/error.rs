//! The one error type of this crate: why a token or the key configuration was refused.

use std::path::PathBuf;

/// Why a bearer token, a key file or a piece of configuration was refused.
///
/// Every message is safe to show to a client: none quotes key material, secrets or
/// the contents of a token. Configuration errors ([`AuthError::is_config_error`]) happen at
/// start-up and belong in the operator's log, not in an HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization` header was sent.
    #[error("the Authorization header is missing")]
    MissingCredentials,
    /// The `Authorization` header is not `Bearer <token>`.
    #[error("the Authorization header is not of the form `Bearer <token>`")]
    MalformedHeader,
    /// The token is not a well-formed signed JWT (compact JWS with a JSON header and payload).
    #[error("the bearer token is malformed: {0}")]
    MalformedToken(&'static str),
    /// The signature does not match the header and payload under the selected key.
    #[error("the token signature is invalid")]
    BadSignature,
    /// `exp` lies in the past, beyond the configured leeway.
    #[error("the token has expired")]
    Expired,
    /// `nbf` lies in the future, beyond the configured leeway.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` lies in the future, beyond the configured leeway.
    #[error("the token was issued in the future")]
    IssuedInFuture,
    /// `exp - iat` is longer than the configured maximum token lifetime.
    #[error("the token lifetime exceeds the accepted maximum")]
    LifetimeTooLong,
    /// `iss` is missing or is not the configured issuer.
    #[error("the token issuer is not accepted")]
    WrongIssuer,
    /// `aud` is missing or does not name the configured audience.
    #[error("the token audience is not accepted")]
    WrongAudience,
    /// The header names an algorithm this service does not implement.
    #[error("the token algorithm is not supported")]
    UnsupportedAlgorithm,
    /// The header names an algorithm that is refused: `none`, or one that differs from the
    /// algorithm of the selected key (algorithm confusion).
    #[error("the token algorithm `{0}` is not accepted for this key")]
    ForbiddenAlgorithm(&'static str),
    /// The header's `kid` names no configured key.
    #[error("the token key id is not known")]
    UnknownKid,
    /// The header has no `kid`, and several keys are configured.
    #[error("the token has no key id, and several keys are configured")]
    MissingKid,
    /// A claim this service reads (`sub`, `exp`, `nbf`, `iat`, the roles or teams claim) is missing
    /// where required or has the wrong type.
    #[error("the token claim `{0}` is missing or invalid")]
    InvalidClaim(String),
    /// A key file could not be read or does not hold a usable key (configuration error).
    #[error("key file {}: {reason}", path.display())]
    KeyFile {
        /// The file in question.
        path: PathBuf,
        /// What is wrong with it; never quotes key material.
        reason: String,
    },
    /// The authentication configuration is unusable (configuration error).
    #[error("authentication is misconfigured: {0}")]
    Config(String),
    /// A duration such as `--ttl` could not be read.
    #[error(
        "invalid duration `{0}`: use a positive number followed by s, m, h or d (90s, 15m, 1h, 2d)"
    )]
    InvalidTtl(String),
}

impl AuthError {
    /// True for errors about this service's own configuration (key files, settings, a
    /// duration typed by an operator), which answer 500 or stop start-up; false for errors
    /// about a presented credential, which answer 401.
    pub fn is_config_error(&self) -> bool {
        matches!(
            self,
            AuthError::KeyFile { .. } | AuthError::Config(_) | AuthError::InvalidTtl(_)
        )
    }

    /// A stable, machine-readable code for this error, suitable as the last segment of an
    /// RFC 9457 problem `type`.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::MissingCredentials => "missing-credentials",
            AuthError::MalformedHeader => "malformed-authorization-header",
            AuthError::MalformedToken(_) => "malformed-token",
            AuthError::BadSignature => "bad-signature",
            AuthError::Expired => "token-expired",
            AuthError::NotYetValid => "token-not-yet-valid",
            AuthError::IssuedInFuture => "token-issued-in-future",
            AuthError::LifetimeTooLong => "token-lifetime-too-long",
            AuthError::WrongIssuer => "wrong-issuer",
            AuthError::WrongAudience => "wrong-audience",
            AuthError::UnsupportedAlgorithm => "unsupported-algorithm",
            AuthError::ForbiddenAlgorithm(_) => "forbidden-algorithm",
            AuthError::UnknownKid => "unknown-key-id",
            AuthError::MissingKid => "missing-key-id",
            AuthError::InvalidClaim(_) => "invalid-claim",
            AuthError::KeyFile { .. } => "key-file",
            AuthError::Config(_) => "auth-config",
            AuthError::InvalidTtl(_) => "invalid-ttl",
        }
    }

    pub(crate) fn key_file(path: &std::path::Path, reason: impl Into<String>) -> Self {
        AuthError::KeyFile {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}
