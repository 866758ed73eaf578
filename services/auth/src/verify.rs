//! Verifying a bearer token against the configured keys and turning it into a [`Principal`].

use std::num::NonZeroUsize;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use lru::LruCache;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::keys::KeySet;
use crate::oidc::{OidcKeys, OidcProvider};
use crate::{AuthConfig, AuthError, DevKeys, KeySource, VerifyOptions};

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Who presented a valid token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    /// The token's `sub`: the actor id recorded on events.
    pub sub: String,
    /// Roles from the configured roles claim, in token order, without duplicates.
    pub roles: Vec<String>,
    /// Teams from the configured teams claim; `*` means every team and is passed through.
    pub teams: Vec<String>,
}

/// A verified token: who presented it, and the unix time its `exp` claim ends it at
/// (long-lived answers, such as an event stream, end there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub principal: Principal,
    pub expires_at: i64,
}

/// Verifies bearer tokens. Cheap to clone; `Send + Sync`, so one instance can serve every
/// worker.
///
/// Verified tokens are remembered (see [`VerifyOptions::cache_entries`]) by the SHA-256 of
/// the token: a remembered token skips decoding and the signature check, but its `exp`,
/// `nbf` and `iat` are checked against `now` on every use, with the same leeway, so the
/// cache never extends a token's validity. The cache is emptied whenever the keys change.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// The configuration in force (for an OpenID Connect source, with its issuer and
    /// audience).
    config: AuthConfig,
    options: VerifyOptions,
    keys: RwLock<Arc<Keys>>,
    cache: Option<Mutex<LruCache<[u8; 32], Cached>>>,
    oidc: Option<OidcKeys>,
}

/// One version of the key set; `generation` grows by one whenever the keys are replaced.
pub(crate) struct Keys {
    pub(crate) set: KeySet,
    pub(crate) generation: u64,
}

/// The time claims of a verified token: all that must be checked again on later uses.
#[derive(Clone, Copy, Debug)]
struct Times {
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
}

/// A verified token, remembered.
struct Cached {
    principal: Principal,
    times: Times,
    generation: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("config", &self.inner.config)
            .field("options", &self.inner.options)
            .field("keys", &self.current_keys().set.len())
            .field("oidc", &self.inner.oidc.is_some())
            .finish()
    }
}

impl Verifier {
    /// Loads the keys and checks the configuration, with the default [`VerifyOptions`].
    /// Every problem with a key file or a setting is reported here, at start-up, as a
    /// configuration error. An OpenID Connect source needs [`Verifier::connect`].
    pub fn new(config: AuthConfig, source: KeySource) -> Result<Verifier, AuthError> {
        Verifier::with_options(config, source, VerifyOptions::default())
    }

    /// [`Verifier::new`] with explicit options.
    pub fn with_options(
        config: AuthConfig,
        source: KeySource,
        options: VerifyOptions,
    ) -> Result<Verifier, AuthError> {
        config.validate()?;
        options.validate()?;
        let keys =
            match &source {
                KeySource::PemFile(path) => KeySet::from_pem_file(path)?,
                KeySource::JwksFile(path) => KeySet::from_jwks_file(path, config.allow_hs256)?,
                KeySource::Hs256Secret(secret) => {
                    KeySet::from_hs256_secret(secret, config.allow_hs256)?
                }
                KeySource::DevKeyDir(dir) => KeySet::from_dev_keys(&DevKeys::load_or_create(dir)?),
                KeySource::Oidc { .. } => return Err(AuthError::Config(
                    "an OpenID Connect key source is discovered over HTTP: use `Verifier::connect`"
                        .to_owned(),
                )),
            };
        Ok(Verifier::assemble(config, options, keys, None))
    }

    /// Like [`Verifier::with_options`], for every key source: an OpenID Connect issuer is
    /// discovered and its JWKS fetched here, so an unreachable or inconsistent provider is
    /// a start-up error.
    pub async fn connect(
        config: AuthConfig,
        source: KeySource,
        options: VerifyOptions,
    ) -> Result<Verifier, AuthError> {
        let KeySource::Oidc { issuer, audience } = source else {
            return Verifier::with_options(config, source, options);
        };
        let config = AuthConfig {
            issuer: issuer.clone(),
            audience,
            ..config
        };
        config.validate()?;
        options.validate()?;
        let (oidc, keys) = OidcKeys::discover(&issuer, &config.audience, &options).await?;
        Ok(Verifier::assemble(config, options, keys, Some(oidc)))
    }

    fn assemble(
        config: AuthConfig,
        options: VerifyOptions,
        keys: KeySet,
        oidc: Option<OidcKeys>,
    ) -> Verifier {
        let cache = NonZeroUsize::new(options.cache_entries)
            .map(|capacity| Mutex::new(LruCache::new(capacity)));
        Verifier {
            inner: Arc::new(Inner {
                config,
                options,
                keys: RwLock::new(Arc::new(Keys {
                    set: keys,
                    generation: 0,
                })),
                cache,
                oidc,
            }),
        }
    }

    /// The configuration in force. With an OpenID Connect source, `issuer` and `audience`
    /// are the provider's issuer and the configured audience.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// The options in force.
    pub fn options(&self) -> &VerifyOptions {
        &self.inner.options
    }

    /// The OpenID Connect issuer whose tokens are accepted, if that is the key source.
    pub fn oidc_issuer(&self) -> Option<&str> {
        self.inner
            .oidc
            .as_ref()
            .map(|_| self.inner.config.issuer.as_str())
    }

    /// The OpenID Connect provider's sign-in endpoints, if that is the key source: what a
    /// console needs for the authorization code flow with PKCE.
    pub fn oidc_provider(&self) -> Option<&OidcProvider> {
        self.inner.oidc.as_ref().map(|oidc| &oidc.provider)
    }

    /// How many times the JWKS has been fetched (discovery included); 0 without an OpenID
    /// Connect source. For metrics.
    pub fn jwks_fetches(&self) -> u64 {
        self.inner.oidc.as_ref().map_or(0, OidcKeys::fetches)
    }

    /// How many verified tokens are remembered right now. For metrics.
    pub fn cached_tokens(&self) -> usize {
        self.inner.cache.as_ref().map_or(0, |cache| {
            cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .len()
        })
    }

    /// Verifies the value of an `Authorization` header (`None` when the header is absent).
    pub fn verify_authorization(
        &self,
        header: Option<&str>,
        now: i64,
    ) -> Result<Verified, AuthError> {
        self.verify_timed(bearer_token(header)?, now)
    }

    /// [`Verifier::verify_authorization`], refreshing an OpenID Connect provider's keys
    /// when the token names an unknown `kid` (see [`Verifier::verify_refreshing`]).
    pub async fn verify_authorization_refreshing(
        &self,
        header: Option<&str>,
        now: i64,
    ) -> Result<Verified, AuthError> {
        self.verify_refreshing_timed(bearer_token(header)?, now)
            .await
    }

    /// Like [`Verifier::verify`]; when the key source is an OpenID Connect provider and the
    /// token names a `kid` it does not know, the provider's JWKS is fetched again (at most
    /// once per [`VerifyOptions::jwks_refresh_interval`], one fetch shared by concurrent
    /// callers) and the token checked once more, so a rotated key is picked up without a
    /// restart. Every other token is verified without waiting, exactly as by `verify`.
    pub async fn verify_refreshing(
        &self,
        bearer_token: &str,
        now: i64,
    ) -> Result<Principal, AuthError> {
        self.verify_refreshing_timed(bearer_token, now)
            .await
            .map(|v| v.principal)
    }

    async fn verify_refreshing_timed(
        &self,
        bearer_token: &str,
        now: i64,
    ) -> Result<Verified, AuthError> {
        let seen = self.current_keys().generation;
        match self.verify_timed(bearer_token, now) {
            Err(AuthError::UnknownKid) => {
                let Some(oidc) = &self.inner.oidc else {
                    return Err(AuthError::UnknownKid);
                };
                if oidc
                    .refresh(&self.inner.keys, seen, &self.inner.options)
                    .await
                {
                    self.clear_cache();
                    self.verify_timed(bearer_token, now)
                } else {
                    Err(AuthError::UnknownKid)
                }
            }
            other => other,
        }
    }

    /// Verifies a bearer token (the part after `Bearer `) at the unix time `now`.
    ///
    /// Order of checks: length; a remembered token (by its SHA-256) only has its time
    /// claims checked again. Otherwise: shape and header; the algorithm (`none` and unknown
    /// ones refused); the key (by `kid`); the header's algorithm against the key's own
    /// (confusion refused); the signature; then `exp`, `nbf` and `iat` with the configured
    /// leeway, the lifetime `exp - iat` against the maximum, `iss`, `aud`, `sub`, and the
    /// roles and teams claims. Nothing in the payload is looked at before the signature has
    /// been checked.
    pub fn verify(&self, bearer_token: &str, now: i64) -> Result<Principal, AuthError> {
        self.verify_timed(bearer_token, now).map(|v| v.principal)
    }

    /// [`Verifier::verify`], with the token's expiry.
    pub fn verify_timed(&self, bearer_token: &str, now: i64) -> Result<Verified, AuthError> {
        if bearer_token.is_empty() {
            return Err(AuthError::MalformedToken("the token is empty"));
        }
        if bearer_token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::MalformedToken("the token is too long"));
        }
        let keys = self.current_keys();
        let digest: [u8; 32] = match &self.inner.cache {
            None => {
                return self.verify_uncached(bearer_token, &keys.set, now).map(
                    |(principal, times)| Verified {
                        principal,
                        expires_at: times.exp,
                    },
                )
            }
            Some(_) => Sha256::digest(bearer_token.as_bytes()).into(),
        };
        if let Some(result) = self.cached(&digest, keys.generation, now) {
            return result;
        }
        let (principal, times) = self.verify_uncached(bearer_token, &keys.set, now)?;
        if let Some(cache) = &self.inner.cache {
            let mut cache = cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            cache.put(
                digest,
                Cached {
                    principal: principal.clone(),
                    times,
                    generation: keys.generation,
                },
            );
        }
        Ok(Verified {
            principal,
            expires_at: times.exp,
        })
    }

    /// The answer for a remembered token, `None` when it is not remembered (or was
    /// verified under keys that have since been replaced).
    fn cached(
        &self,
        digest: &[u8; 32],
        generation: u64,
        now: i64,
    ) -> Option<Result<Verified, AuthError>> {
        let cache = self.inner.cache.as_ref()?;
        let mut cache = cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = cache.get(digest)?;
        if entry.generation != generation {
            cache.pop(digest);
            return None;
        }
        let result = match self.check_times(&entry.times, now) {
            Ok(()) => Ok(Verified {
                principal: entry.principal.clone(),
                expires_at: entry.times.exp,
            }),
            Err(err) => Err(err),
        };
        if result == Err(AuthError::Expired) {
            cache.pop(digest);
        }
        Some(result)
    }

    fn clear_cache(&self) {
        if let Some(cache) = &self.inner.cache {
            cache
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clear();
        }
    }

    fn current_keys(&self) -> Arc<Keys> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn verify_uncached(
        &self,
        bearer_token: &str,
        keys: &KeySet,
        now: i64,
    ) -> Result<(Principal, Times), AuthError> {
        let header = TokenHeader::parse(bearer_token)?;
        let entry = keys.select(header.kid.as_deref())?;
        if header.alg != entry.alg {
            return Err(AuthError::ForbiddenAlgorithm(algorithm_name(header.alg)));
        }

        // The library checks the signature and that the header's algorithm is the key's;
        // time, issuer and audience are checked below against the caller's `now`.
        let mut validation = Validation::new(entry.alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(bearer_token, &entry.key, &validation)
                .map_err(|err| match err.kind() {
                    ErrorKind::InvalidSignature => AuthError::BadSignature,
                    ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                        AuthError::ForbiddenAlgorithm(algorithm_name(header.alg))
                    }
                    ErrorKind::InvalidToken
                    | ErrorKind::Base64(_)
                    | ErrorKind::Json(_)
                    | ErrorKind::Utf8(_) => {
                        AuthError::MalformedToken("the token could not be decoded")
                    }
                    _ => AuthError::BadSignature,
                })?;
        self.principal_from_claims(&data.claims, now)
    }

    /// `exp`, `nbf` and `iat` against `now`, with the configured leeway.
    fn check_times(&self, times: &Times, now: i64) -> Result<(), AuthError> {
        let now = i128::from(now);
        let leeway = i128::from(self.inner.config.leeway_seconds);
        if now >= i128::from(times.exp) + leeway {
            return Err(AuthError::Expired);
        }
        if times.nbf.is_some_and(|nbf| now + leeway < i128::from(nbf)) {
            return Err(AuthError::NotYetValid);
        }
        if times.iat.is_some_and(|iat| now + leeway < i128::from(iat)) {
            return Err(AuthError::IssuedInFuture);
        }
        Ok(())
    }

    fn principal_from_claims(
        &self,
        claims: &Map<String, Value>,
        now: i64,
    ) -> Result<(Principal, Times), AuthError> {
        let config = &self.inner.config;
        let times = Times {
            exp: numeric_date(claims, "exp")?.ok_or_else(|| claim_error("exp"))?,
            nbf: numeric_date(claims, "nbf")?,
            iat: numeric_date(claims, "iat")?,
        };
        self.check_times(&times, now)?;
        if let Some(max) = self.inner.options.max_lifetime_seconds {
            let iat = times.iat.ok_or_else(|| claim_error("iat"))?;
            if i128::from(times.exp) - i128::from(iat) > i128::from(max) {
                return Err(AuthError::LifetimeTooLong);
            }
        }

        match claims.get("iss") {
            Some(Value::String(iss)) if *iss == config.issuer => {}
            _ => return Err(AuthError::WrongIssuer),
        }
        let audience = config.audience.as_str();
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => aud == audience,
            Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
            _ => false,
        };
        if !audience_ok {
            return Err(AuthError::WrongAudience);
        }

        let sub = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.trim().is_empty() => sub.clone(),
            _ => return Err(claim_error("sub")),
        };
        let roles = list_claim(claims, &config.roles_claim)?;
        let teams = list_claim(claims, &config.teams_claim)?;
        Ok((Principal { sub, roles, teams }, times))
    }
}

/// Takes the token out of an `Authorization` header value (`Bearer <token>`; the scheme is
/// case-insensitive). `None` (no header) is [`AuthError::MissingCredentials`].
pub fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::MissingCredentials)?.trim();
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MalformedHeader)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.contains(char::is_whitespace)
    {
        return Err(AuthError::MalformedHeader);
    }
    Ok(token)
}

/// The parts of the JOSE header needed before the signature is checked.
struct TokenHeader {
    alg: Algorithm,
    kid: Option<String>,
}

impl TokenHeader {
    fn parse(token: &str) -> Result<TokenHeader, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(_payload), Some(_signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::MalformedToken(
                "expected a signed JWT of three dot-separated parts",
            ));
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| AuthError::MalformedToken("the header is not base64url"))?;
        let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&bytes) else {
            return Err(AuthError::MalformedToken("the header is not a JSON object"));
        };
        if header.contains_key("crit") {
            return Err(AuthError::MalformedToken(
                "critical header parameters are not supported",
            ));
        }
        let alg = match header.get("alg") {
            Some(Value::String(alg)) if alg.eq_ignore_ascii_case("none") => {
                return Err(AuthError::ForbiddenAlgorithm("none"));
            }
            Some(Value::String(alg)) => {
                Algorithm::from_str(alg).map_err(|_| AuthError::UnsupportedAlgorithm)?
            }
            _ => return Err(AuthError::MalformedToken("the header has no `alg`")),
        };
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => {
                return Err(AuthError::MalformedToken(
                    "the header `kid` is not a string",
                ))
            }
        };
        Ok(TokenHeader { alg, kid })
    }
}

/// The JOSE name of an algorithm.
pub(crate) fn algorithm_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::EdDSA => "EdDSA",
    }
}

fn claim_error(name: &str) -> AuthError {
    AuthError::InvalidClaim(name.to_owned())
}

/// A NumericDate claim (seconds since the epoch; a fraction is truncated).
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(number)) => {
            if let Some(seconds) = number.as_i64() {
                Ok(Some(seconds))
            } else {
                match number.as_f64() {
                    // `as` saturates, which is the wanted behaviour for absurd values.
                    Some(seconds) if seconds.is_finite() => Ok(Some(seconds.trunc() as i64)),
                    _ => Err(claim_error(name)),
                }
            }
        }
        Some(_) => Err(claim_error(name)),
    }
}

/// A list claim: a JSON array of strings, or one string of names separated by spaces or
/// commas. Missing or `null` is the empty list.
fn list_claim(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, AuthError> {
    let mut items: Vec<String> = Vec::new();
    let mut push = |item: &str| {
        let item = item.trim();
        if !item.is_empty() && !items.iter().any(|existing| existing == item) {
            items.push(item.to_owned());
        }
    };
    match claims.get(name) {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => text
            .split(|c: char| c == ',' || c.is_whitespace())
            .for_each(&mut push),
        Some(Value::Array(values)) => {
            for value in values {
                push(value.as_str().ok_or_else(|| claim_error(name))?);
            }
        }
        Some(_) => return Err(claim_error(name)),
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_is_parsed() {
        assert_eq!(bearer_token(Some("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(bearer_token(Some("bearer   abc ")), Ok("abc"));
        assert_eq!(bearer_token(None), Err(AuthError::MissingCredentials));
        assert_eq!(bearer_token(Some("")), Err(AuthError::MalformedHeader));
        assert_eq!(
            bearer_token(Some("Bearer")),
            Err(AuthError::MalformedHeader)
        );
        assert_eq!(
            bearer_token(Some("Basic abc")),
            Err(AuthError::MalformedHeader)
        );
        assert_eq!(
            bearer_token(Some("Bearer a b")),
            Err(AuthError::MalformedHeader)
        );
    }

    #[test]
    fn list_claims_accept_arrays_and_separated_strings() {
        let claims: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "a": ["x", "y", "x", " "],
            "b": "x, y  z,,",
            "c": null,
            "d": 5,
            "e": ["x", 1],
        }))
        .unwrap();
        assert_eq!(list_claim(&claims, "a").unwrap(), ["x", "y"]);
        assert_eq!(list_claim(&claims, "b").unwrap(), ["x", "y", "z"]);
        assert!(list_claim(&claims, "c").unwrap().is_empty());
        assert!(list_claim(&claims, "missing").unwrap().is_empty());
        assert_eq!(list_claim(&claims, "d"), Err(claim_error("d")));
        assert_eq!(list_claim(&claims, "e"), Err(claim_error("e")));
    }

    #[test]
    fn numeric_dates_accept_fractions() {
        let claims: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"exp": 10.9, "nbf": "soon"})).unwrap();
        assert_eq!(numeric_date(&claims, "exp"), Ok(Some(10)));
        assert_eq!(numeric_date(&claims, "nbf"), Err(claim_error("nbf")));
        assert_eq!(numeric_date(&claims, "iat"), Ok(None));
    }
}
