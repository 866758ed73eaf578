//! What the verifier is told: which issuer and audience to accept, where roles and teams
//! live in a token, and where the keys come from.

use std::fmt;
use std::path::PathBuf;

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
    /// Clock leeway applied to `exp` and `nbf`, in seconds. Default 30, at most 3600.
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
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::PemFile(path) => f.debug_tuple("PemFile").field(path).finish(),
            KeySource::JwksFile(path) => f.debug_tuple("JwksFile").field(path).finish(),
            KeySource::Hs256Secret(_) => f.debug_tuple("Hs256Secret").field(&"[redacted]").finish(),
            KeySource::DevKeyDir(path) => f.debug_tuple("DevKeyDir").field(path).finish(),
        }
    }
}
