//! Keys of an OpenID Connect provider: discovery, the JWKS, and refreshing it when a token
//! names a key the provider has only just started to use.
//!
//! OpenID Connect Discovery 1.0 §4: the configuration is at
//! `{issuer}/.well-known/openid-configuration` (a terminating `/` of the issuer removed
//! first), and its `issuer` member MUST be identical to the issuer it was fetched for.
//! Its `jwks_uri` names the JWK set (RFC 7517) that signs the provider's tokens.
//!
//! The set is fetched at start-up and kept. It is fetched again only when a token names a
//! `kid` that is not in it, at most once per refresh interval, one request shared by
//! every caller waiting for it; tokens with known keys never cause a request.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use reqwest::header::ACCEPT;
use reqwest::Url;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::keys::KeySet;
use crate::verify::Keys;
use crate::{AuthError, VerifyOptions};

/// Discovery documents and key sets larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// What a browser client (the console) needs to sign in with the provider: the endpoints
/// of its discovery document (OpenID Connect Discovery 1.0 §3), as discovered at start-up.
/// Serializes to a JSON object a server can hand to its console as it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OidcProvider {
    /// The issuer (identical to the discovery document's).
    pub issuer: String,
    /// The audience tokens must name (usually the console's client id).
    pub audience: String,
    /// `authorization_endpoint`, where the authorization code flow starts.
    pub authorization_endpoint: Option<String>,
    /// `token_endpoint`, where the code is exchanged (with the PKCE verifier).
    pub token_endpoint: Option<String>,
    /// `end_session_endpoint` (RP-initiated logout), when the provider has one.
    pub end_session_endpoint: Option<String>,
    /// `jwks_uri`.
    pub jwks_uri: String,
    /// `code_challenge_methods_supported` (PKCE; `S256` expected).
    pub code_challenge_methods_supported: Vec<String>,
}

/// The provider's JWKS location and the state of its refreshes.
pub(crate) struct OidcKeys {
    issuer: String,
    pub(crate) provider: OidcProvider,
    jwks_uri: Url,
    client: reqwest::Client,
    refresh: tokio::sync::Mutex<RefreshState>,
    fetches: AtomicU64,
}

struct RefreshState {
    /// When the JWKS was last requested (successfully or not).
    last_fetch: Instant,
    /// SHA-256 of the JWKS in use, to tell a changed set from the same one.
    digest: [u8; 32],
}

impl OidcKeys {
    /// Discovers the provider and fetches its keys; every failure is a configuration
    /// error naming the issuer.
    pub(crate) async fn discover(
        issuer: &str,
        audience: &str,
        options: &VerifyOptions,
    ) -> Result<(OidcKeys, KeySet), AuthError> {
        let fail = |reason: String| {
            AuthError::Config(format!("OpenID Connect issuer `{issuer}`: {reason}"))
        };
        let issuer_url = checked_url(issuer, "the issuer").map_err(fail)?;
        if issuer_url.query().is_some() || issuer_url.fragment().is_some() {
            return Err(fail(
                "an issuer URL has no query or fragment component".to_owned(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(options.http_timeout)
            .connect_timeout(options.http_timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| fail(format!("cannot set up the HTTP client: {err}")))?;

        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery_url = checked_url(&discovery_url, "the discovery URL").map_err(fail)?;
        let document = get_bounded(&client, &discovery_url).await.map_err(fail)?;
        let document: Value = serde_json::from_slice(&document)
            .map_err(|_| fail(format!("{discovery_url} is not a JSON document")))?;
        match document.get("issuer").and_then(Value::as_str) {
            Some(named) if named == issuer => {}
            Some(named) => {
                return Err(fail(format!(
                    "the discovery document names the issuer `{named}`, which is not identical to the configured one"
                )))
            }
            None => return Err(fail("the discovery document has no `issuer`".to_owned())),
        }
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("the discovery document has no `jwks_uri`".to_owned()))?;
        let jwks_uri = checked_url(jwks_uri, "the `jwks_uri`").map_err(fail)?;

        let endpoint = |name: &str| {
            document
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let provider = OidcProvider {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            authorization_endpoint: endpoint("authorization_endpoint"),
            token_endpoint: endpoint("token_endpoint"),
            end_session_endpoint: endpoint("end_session_endpoint"),
            jwks_uri: jwks_uri.to_string(),
            code_challenge_methods_supported: document
                .get("code_challenge_methods_supported")
                .and_then(Value::as_array)
                .map(|methods| {
                    methods
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        };
        let mut oidc = OidcKeys {
            issuer: issuer.to_owned(),
            provider,
            jwks_uri,
            client,
            refresh: tokio::sync::Mutex::new(RefreshState {
                last_fetch: Instant::now(),
                digest: [0; 32],
            }),
            fetches: AtomicU64::new(0),
        };
        let body = oidc.fetch_jwks().await.map_err(fail)?;
        let keys = KeySet::from_oidc_jwks(&body)
            .map_err(|reason| fail(format!("the JWKS at {} {reason}", oidc.jwks_uri)))?;
        {
            let state = oidc.refresh.get_mut();
            state.digest = Sha256::digest(&body).into();
            state.last_fetch = Instant::now();
        }
        tracing::info!(
            issuer,
            jwks_uri = %oidc.jwks_uri,
            kids = ?keys.kids(),
            "OpenID Connect keys loaded"
        );
        Ok((oidc, keys))
    }

    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// Fetches the JWKS again after a token named an unknown `kid` under the keys of
    /// generation `seen`. Returns true when the keys in force are not those of `seen`
    /// any more (this call or a concurrent one replaced them), so the token is worth
    /// checking again; false when nothing changed (too soon since the last fetch, the
    /// provider unreachable or its set unchanged or unusable).
    pub(crate) async fn refresh(
        &self,
        keys: &RwLock<Arc<Keys>>,
        seen: u64,
        options: &VerifyOptions,
    ) -> bool {
        let generation = || {
            keys.read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .generation
        };
        let mut state = self.refresh.lock().await;
        if generation() != seen {
            return true;
        }
        if state.last_fetch.elapsed() < options.jwks_refresh_interval {
            tracing::debug!(
                issuer = %self.issuer,
                "token with an unknown kid; the JWKS was fetched too recently to fetch it again"
            );
            return false;
        }
        state.last_fetch = Instant::now();
        let body = match self.fetch_jwks().await {
            Ok(body) => body,
            Err(reason) => {
                tracing::warn!(issuer = %self.issuer, %reason, "cannot refresh the OpenID Connect keys");
                return false;
            }
        };
        let digest: [u8; 32] = Sha256::digest(&body).into();
        if digest == state.digest {
            return false;
        }
        let set = match KeySet::from_oidc_jwks(&body) {
            Ok(set) => set,
            Err(reason) => {
                tracing::warn!(issuer = %self.issuer, jwks_uri = %self.jwks_uri, %reason, "refreshed OpenID Connect JWKS is unusable; keeping the keys in force");
                return false;
            }
        };
        state.digest = digest;
        tracing::info!(issuer = %self.issuer, kids = ?set.kids(), "OpenID Connect keys refreshed");
        let mut current = keys
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let generation = current.generation + 1;
        *current = Arc::new(Keys { set, generation });
        true
    }

    async fn fetch_jwks(&self) -> Result<Vec<u8>, String> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        get_bounded(&self.client, &self.jwks_uri).await
    }
}

/// GET `url` expecting 200 and a body of at most [`MAX_DOCUMENT_BYTES`].
async fn get_bounded(client: &reqwest::Client, url: &Url) -> Result<Vec<u8>, String> {
    let mut response = client
        .get(url.clone())
        .header(ACCEPT, "application/json")
        .send()
        .await
        .map_err(|err| format!("GET {url} failed: {}", with_causes(&err)))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("GET {url} answered {}", response.status()));
    }
    let too_large = || format!("GET {url} answered more than {MAX_DOCUMENT_BYTES} bytes");
    if response
        .content_length()
        .is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| format!("GET {url} failed: {err}"))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its causes on one line (reqwest's own message leaves out why a connection
/// failed).
fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Parses a provider URL: `https://`, or `http://` on a loopback host only (a provider
/// started next to rollgate for development or tests).
fn checked_url(text: &str, what: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|_| format!("{what} `{text}` is not a URL"))?;
    match url.scheme() {
        "https" if url.host_str().is_some() => Ok(url),
        "http" if url.host_str().is_some_and(is_loopback_host) => Ok(url),
        "http" => Err(format!(
            "{what} `{text}` is plain http on a host that is not loopback; use https"
        )),
        _ => Err(format!("{what} `{text}` is not an https URL")),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) => crate::dev_policy::is_loopback_ip(ip),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_urls_are_https_or_loopback_http() {
        assert!(checked_url("https://id.example.com/realms/x", "issuer").is_ok());
        assert!(checked_url("http://127.0.0.1:4000", "issuer").is_ok());
        assert!(checked_url("http://[::1]:4000/", "issuer").is_ok());
        assert!(checked_url("http://localhost:4000", "issuer").is_ok());
        assert!(checked_url("http://id.example.com", "issuer").is_err());
        assert!(checked_url("http://10.0.0.1", "issuer").is_err());
        assert!(checked_url("ftp://id.example.com", "issuer").is_err());
        assert!(checked_url("id.example.com", "issuer").is_err());
    }
}
