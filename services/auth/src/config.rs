//! What the verifier is told: which issuer and audience to accept, where roles and teams
//! live in a token, and where the keys come from.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::AuthError;

/// The largest clock leeway accepted; more is almost certainly a unit mistake.
pub const MAX_LEEWAY_SECONDS: u64 = 3600;

/// Settings for token verification. `Default` gives the documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The only accepted `iss`. Default `"rollgate"`.
    pub issuer: String,
    /// The audience that `aud` must name (a string, or one entry of an array). Default `"rollgate"`.
    pub audience: String,
    /// The claim holding the principal's roles. Default `"roles"`.
    pub roles_claim: String,
    /// The claim holding the principal's teams (`*` = all teams). Default `"teams"`.
    pub teams_claim: String,
    /// Clock leeway applied to `exp`, `nbf` and `iat`, in seconds. Default 30, at most 3600.
    pub leeway_seconds: u64,
    /// Whether an HS256 shared secret may be configured (development only). Default false.
    pub allow_hs256: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            issuer: "rollgate".to_owned(),
            audience: "rollgate".to_owned(),
            roles_claim: "roles".to_owned(),
            teams_claim: "teams".to_owned(),
            leeway_seconds: 30,
            allow_hs256: false,
        }
    }
}

impl AuthConfig {
    pub(crate) fn validate(&self) -> Result<(), AuthError> {
        for (name, value) in [
            ("issuer", &self.issuer),
            ("audience", &self.audience),
            ("roles_claim", &self.roles_claim),
            ("teams_claim", &self.teams_claim),
        ] {
            if value.trim().is_empty() {
                return Err(AuthError::Config(format!("`{name}` must not be empty")));
            }
        }
        if self.roles_claim == self.teams_claim {
            return Err(AuthError::Config(
                "`roles_claim` and `teams_claim` must name different claims".to_owned(),
            ));
        }
        if self.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(AuthError::Config(format!(
                "`leeway_seconds` is {}; at most {MAX_LEEWAY_SECONDS} is accepted",
                self.leeway_seconds
            )));
        }
        Ok(())
    }
}

/// The default maximum token lifetime (`exp - iat`): 24 hours. Long enough for a working
/// day's session token from an identity provider, short enough that a leaked token is not a
/// standing credential.
pub const DEFAULT_MAX_LIFETIME_SECONDS: u64 = 24 * 3600;

/// The default number of verified tokens remembered by a [`crate::Verifier`].
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;

/// The default shortest time between two JWKS refreshes caused by unknown key ids.
pub const DEFAULT_JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);

/// How tokens are verified, beyond what they must say ([`AuthConfig`]). `Default` gives the
/// documented defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The longest accepted token lifetime, `exp - iat`, in seconds. When set, a token
    /// without `iat` is refused. `None` accepts any lifetime (an `iat` in the future is
    /// still refused). Default 24 hours ([`DEFAULT_MAX_LIFETIME_SECONDS`]).
    pub max_lifetime_seconds: Option<u64>,
    /// How many verified tokens are remembered (least recently used evicted first); a
    /// remembered token skips the signature check until its `exp`, which is checked on
    /// every use. 0 turns the cache off. Default 10,000.
    pub cache_entries: usize,
    /// With an OpenID Connect key source: the shortest time between two fetches of the
    /// issuer's JWKS caused by tokens with an unknown `kid`. Default 30 seconds.
    pub jwks_refresh_interval: Duration,
    /// With an OpenID Connect key source: how long one discovery or JWKS request may take.
    /// Default 10 seconds.
    pub http_timeout: Duration,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            max_lifetime_seconds: Some(DEFAULT_MAX_LIFETIME_SECONDS),
            cache_entries: DEFAULT_CACHE_ENTRIES,
            jwks_refresh_interval: DEFAULT_JWKS_REFRESH_INTERVAL,
            http_timeout: Duration::from_secs(10),
        }
    }
}

impl VerifyOptions {
    pub(crate) fn validate(&self) -> Result<(), AuthError> {
        if self.max_lifetime_seconds == Some(0) {
            return Err(AuthError::Config(
                "the maximum token lifetime must be positive".to_owned(),
            ));
        }
        if self
            .max_lifetime_seconds
            .is_some_and(|seconds| i64::try_from(seconds).is_err())
        {
            return Err(AuthError::Config(
                "the maximum token lifetime is too long".to_owned(),
            ));
        }
        if self.http_timeout.is_zero() {
            return Err(AuthError::Config(
                "the OpenID Connect HTTP timeout must be positive".to_owned(),
            ));
        }
        Ok(())
    }
}

/// Where the verification keys come from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// One PEM file holding a public key (`PUBLIC KEY` or `RSA PUBLIC KEY`) or an X.509
    /// `CERTIFICATE`. The key type decides the algorithm: RSA (at least 2048 bits) → RS256,
    /// EC P-256 → ES256, EC P-384 → ES384, Ed25519 → EdDSA. Private keys are refused.
    PemFile(PathBuf),
    /// A JWKS file (`{"keys":[...]}`). Tokens pick a key by `kid`; a token without `kid` is
    /// accepted only when the set has a single usable key. Keys marked `"use":"enc"` are ignored.
    JwksFile(PathBuf),
    /// An HS256 shared secret of at least 32 bytes; refused unless `allow_hs256` is set.
    Hs256Secret(Vec<u8>),
    /// Development mode: the Ed25519 key pair `dev-ed25519.pem` / `dev-ed25519.pub.pem` in
    /// this directory, created on first use (see [`crate::DevKeys`]).
    DevKeyDir(PathBuf),
    /// An OpenID Connect issuer: its keys are discovered from
    /// `{issuer}/.well-known/openid-configuration` (whose `issuer` must equal this one
    /// exactly) and its `jwks_uri`, cached, and fetched again when a token names an unknown
    /// `kid` (at most once per [`VerifyOptions::jwks_refresh_interval`]). Only RS256, ES256
    /// and EdDSA keys are used. Tokens must carry this `iss` and name `audience` in `aud`;
    /// these replace [`AuthConfig::issuer`] and [`AuthConfig::audience`]. The issuer must
    /// be `https://`, or `http://` on a loopback host (development and tests). Needs
    /// [`crate::Verifier::connect`].
    Oidc {
        /// The issuer URL, exactly as the provider writes it in `iss`.
        issuer: String,
        /// The audience its tokens are issued for (usually the client id).
        audience: String,
    },
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::PemFile(path) => f.debug_tuple("PemFile").field(path).finish(),
            KeySource::JwksFile(path) => f.debug_tuple("JwksFile").field(path).finish(),
            KeySource::Hs256Secret(_) => f.debug_tuple("Hs256Secret").field(&"[redacted]").finish(),
            KeySource::DevKeyDir(path) => f.debug_tuple("DevKeyDir").field(path).finish(),
            KeySource::Oidc { issuer, audience } => f
                .debug_struct("Oidc")
                .field("issuer", issuer)
                .field("audience", audience)
                .finish(),
        }
    }
}
