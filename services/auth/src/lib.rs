//! Authentication for rollgate: verifying `Authorization: Bearer` JWTs into a
//! [`Principal`], and the development key pair that `rollgate token` mints with.
//!
//! This crate knows nothing of HTTP frameworks; the server wraps [`Verifier`] in its own
//! extractor and maps [`AuthError`] to problem responses.
//!
//! - Keys come from a PEM file, a JWKS file, an HS256 secret (development only, when
//!   [`AuthConfig::allow_hs256`] is set) or the development key directory ([`KeySource`]).
//!   Each key is bound to one algorithm decided from the key itself: RSA → RS256,
//!   EC P-256 → ES256, Ed25519 → EdDSA. A token whose header names another algorithm is
//!   refused, and so is `alg: none`.
//! - `exp` (required) and `nbf` are checked against the `now` passed by the caller, with
//!   [`AuthConfig::leeway_seconds`] of tolerance; `iss` and `aud` must match the config.
//! - Roles and teams are read from configurable claims, as a JSON array of strings or a
//!   string separated by spaces or commas.
//! - Header parameters that point elsewhere for keys (`jku`, `x5u`, `jwk`, `x5c`) are
//!   ignored: keys only ever come from the configured source.

mod config;
mod dev;
mod error;
mod keys;
mod verify;

pub use config::{AuthConfig, KeySource, MAX_LEEWAY_SECONDS};
pub use dev::{parse_ttl, DevKeys, MintRequest, DEV_PRIVATE_KEY_FILE, DEV_PUBLIC_KEY_FILE};
pub use error::AuthError;
pub use verify::{bearer_token, Principal, Verifier, MAX_TOKEN_BYTES};
