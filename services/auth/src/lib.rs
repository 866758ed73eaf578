//! Authentication for rollgate: verifying `Authorization: Bearer` JWTs into a
//! [`Principal`], and the development key pair that `rollgate token` mints with.
//!
//! This crate knows nothing of HTTP frameworks; the server wraps [`Verifier`] in its own
//! extractor and maps [`AuthError`] to problem responses.
//!
//! - Keys come from a PEM file, a JWKS file, an HS256 secret (development only, when
//!   [`AuthConfig::allow_hs256`] is set), an OpenID Connect issuer (discovered, its JWKS
//!   cached and refreshed when an unknown `kid` arrives) or the development key directory
//!   ([`KeySource`]). [`dev_keys_permitted`] decides when the development keys may be used.
//!   Each key is bound to one algorithm decided from the key itself: RSA → RS256,
//!   EC P-256 → ES256, Ed25519 → EdDSA. A token whose header names another algorithm is
//!   refused, and so is `alg: none`.
//! - `exp` (required), `nbf` and `iat` are checked against the `now` passed by the caller,
//!   with [`AuthConfig::leeway_seconds`] of tolerance, and `exp - iat` against
//!   [`VerifyOptions::max_lifetime_seconds`]; `iss` and `aud` must match the config.
//! - Verified tokens are cached by their SHA-256 until their `exp` (checked on every use).
//! - Roles and teams are read from configurable claims, as a JSON array of strings or a
//!   string separated by spaces or commas.
//! - Header parameters that point elsewhere for keys (`jku`, `x5u`, `jwk`, `x5c`) are
//!   ignored: keys only ever come from the configured source.

mod config;
mod dev;
mod dev_policy;
mod error;
mod keys;
mod oidc;
mod verify;

pub use config::{
    AuthConfig, KeySource, VerifyOptions, DEFAULT_CACHE_ENTRIES, DEFAULT_JWKS_REFRESH_INTERVAL,
    DEFAULT_MAX_LIFETIME_SECONDS, MAX_LEEWAY_SECONDS,
};
pub use dev::{parse_ttl, DevKeys, MintRequest, DEV_PRIVATE_KEY_FILE, DEV_PUBLIC_KEY_FILE};
pub use dev_policy::{
    dev_keys_permitted, is_embedded_sqlite_url, is_loopback_listen_address, DevKeysAllowed,
    DevKeysRefused,
};

/// The JOSE and base64 libraries this crate signs and verifies with, for tools and tests
/// that craft tokens of their own (e.g. hostile ones).
pub mod reexport {
    pub use base64;
    pub use jsonwebtoken;
}
pub use error::AuthError;
pub use oidc::OidcProvider;
pub use verify::{bearer_token, Principal, Verified, Verifier, MAX_TOKEN_BYTES};
