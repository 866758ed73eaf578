//! The web console at `/console/`: static HTML, CSS and JavaScript modules embedded in the
//! binary at compile time and served with a strict Content-Security-Policy.
//!
//! The console is one more API client: it calls the same `/v1` routes with the signed-in
//! person's bearer token, so it can do nothing a token could not. Nothing here reads a
//! token; the server only hands out files and `/console/config.json` (the OpenID Connect
//! issuer and client id the page may sign in with, when configured).

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Where the console is served.
pub const PREFIX: &str = "/console";

/// One embedded file: its path under `/console/`, media type and bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! assets {
    ($($path:literal => $ct:expr),* $(,)?) => {
        const ASSETS: &[Asset] = &[$(Asset {
            path: $path,
            content_type: $ct,
            bytes: include_bytes!(concat!("../assets/", $path)),
        }),*];
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

assets! {
    "index.html" => HTML,
    "console.css" => "text/css; charset=utf-8",
    "favicon.svg" => "image/svg+xml",
    "js/app.js" => JS,
    "js/api.js" => JS,
    "js/auth.js" => JS,
    "js/dom.js" => JS,
    "js/sse.js" => JS,
    "js/chart.js" => JS,
    "js/rules.js" => JS,
    "js/widgets.js" => JS,
    "js/pages/signin.js" => JS,
    "js/pages/inbox.js" => JS,
    "js/pages/rollouts.js" => JS,
    "js/pages/rollout.js" => JS,
    "js/pages/audit.js" => JS,
    "js/pages/postmortem.js" => JS,
}

/// A configuration that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the OpenID Connect issuer {0:?} is not an absolute http(s) URL")]
    BadIssuer(String),
    #[error("an OpenID Connect issuer needs a client id (and a client id needs an issuer)")]
    Incomplete,
    #[error("the OpenID Connect client id must be 1 to 255 visible ASCII characters")]
    BadClientId,
}

/// How the console may sign people in.
#[derive(Clone, Debug, Default)]
pub struct ConsoleConfig {
    oidc: Option<Oidc>,
}

#[derive(Clone, Debug)]
struct Oidc {
    issuer: String,
    /// `scheme://host[:port]` of the issuer, the one other origin the page may connect to.
    origin: String,
    client_id: String,
}

impl ConsoleConfig {
    /// Token paste only.
    pub fn without_oidc() -> Self {
        Self::default()
    }

    /// Both or neither of the issuer and the client id.
    pub fn new(issuer: Option<&str>, client_id: Option<&str>) -> Result<Self, ConfigError> {
        match (issuer, client_id) {
            (None, None) => Ok(Self::default()),
            (Some(issuer), Some(client_id)) => Self::with_oidc(issuer, client_id),
            _ => Err(ConfigError::Incomplete),
        }
    }

    /// Sign-in with the authorization code flow and PKCE at this issuer.
    pub fn with_oidc(issuer: &str, client_id: &str) -> Result<Self, ConfigError> {
        let url = url::Url::parse(issuer).map_err(|_| ConfigError::BadIssuer(issuer.to_owned()))?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(ConfigError::BadIssuer(issuer.to_owned()));
        }
        if client_id.is_empty()
            || client_id.len() > 255
            || !client_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::BadClientId);
        }
        Ok(Self {
            oidc: Some(Oidc {
                issuer: issuer.to_owned(),
                origin: url.origin().ascii_serialization(),
                client_id: client_id.to_owned(),
            }),
        })
    }

    /// The Content-Security-Policy of every console answer.
    pub fn content_security_policy(&self) -> String {
        let connect = match &self.oidc {
            Some(o) => format!("'self' {}", o.origin),
            None => "'self'".to_owned(),
        };
        format!(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src {connect}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        )
    }

    fn client_json(&self) -> ClientConfig<'_> {
        ClientConfig {
            oidc: self.oidc.as_ref().map(|o| OidcJson {
                issuer: &o.issuer,
                client_id: &o.client_id,
            }),
        }
    }
}

/// `/console/config.json`.
#[derive(Serialize)]
struct ClientConfig<'a> {
    oidc: Option<OidcJson<'a>>,
}

#[derive(Serialize)]
struct OidcJson<'a> {
    issuer: &'a str,
    client_id: &'a str,
}

/// What the handlers share: the policy header and the config file, built once.
struct Served {
    csp: HeaderValue,
    config_json: Vec<u8>,
    config_etag: String,
}

/// Serves the console without OpenID Connect sign-in (token paste only).
pub fn configure(cfg: &mut web::ServiceConfig) {
    configure_with(cfg, &ConsoleConfig::default());
}

/// Serves the console under [`PREFIX`] with this configuration.
pub fn configure_with(cfg: &mut web::ServiceConfig, config: &ConsoleConfig) {
    let config_json = serde_json::to_vec(&config.client_json()).expect("config serializes");
    let served = web::Data::new(Served {
        csp: HeaderValue::from_str(&config.content_security_policy())
            .expect("the policy holds a validated origin only"),
        config_etag: etag(&config_json),
        config_json,
    });
    cfg.service(
        web::scope(PREFIX)
            .app_data(served)
            .route("", web::get().to(redirect_to_slash))
            .route("/", web::get().to(index))
            .route("/config.json", web::get().to(client_config))
            .route("/{path:.*}", web::get().to(asset)),
    );
}

fn etag(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// The strong ETag of every embedded asset, computed once.
fn asset_etags() -> &'static [String] {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    ETAGS.get_or_init(|| ASSETS.iter().map(|a| etag(a.bytes)).collect())
}

/// The headers every console answer carries, whatever its status.
fn secure(served: &Served, builder: &mut actix_web::HttpResponseBuilder) {
    builder
        .insert_header((header::CONTENT_SECURITY_POLICY, served.csp.clone()))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header(("Cross-Origin-Opener-Policy", "same-origin"));
}

/// True when the request's `If-None-Match` names this ETag (or `*`).
fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// Answers one embedded file, or 304 when the client holds the same version. Every file
/// is revalidated (`no-cache`): the names carry no hash, so a new binary must be seen at once.
fn serve(req: &HttpRequest, served: &Served, index: usize) -> HttpResponse {
    let asset = &ASSETS[index];
    let etag = &asset_etags()[index];
    let fresh = not_modified(req, etag);
    let mut builder = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    secure(served, &mut builder);
    builder
        .insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if fresh {
        return builder.finish();
    }
    builder
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .body(asset.bytes)
}

fn find(path: &str) -> Option<usize> {
    ASSETS.iter().position(|a| a.path == path)
}

async fn redirect_to_slash(served: web::Data<Served>) -> HttpResponse {
    let mut builder = HttpResponse::PermanentRedirect();
    secure(&served, &mut builder);
    builder
        .insert_header((header::LOCATION, "/console/"))
        .finish()
}

async fn index(req: HttpRequest, served: web::Data<Served>) -> HttpResponse {
    serve(&req, &served, find("index.html").expect("index embedded"))
}

async fn client_config(req: HttpRequest, served: web::Data<Served>) -> HttpResponse {
    let fresh = not_modified(&req, &served.config_etag);
    let mut builder = if fresh {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    secure(&served, &mut builder);
    builder
        .insert_header((header::ETAG, served.config_etag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if fresh {
        return builder.finish();
    }
    builder
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .body(served.config_json.clone())
}

async fn asset(
    req: HttpRequest,
    path: web::Path<String>,
    served: web::Data<Served>,
) -> HttpResponse {
    match find(&path) {
        Some(i) if ASSETS[i].path != "index.html" => serve(&req, &served, i),
        _ => {
            let mut builder = HttpResponse::NotFound();
            secure(&served, &mut builder);
            builder
                .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
                .body("no such file in the console\n")
        }
    }
}

#[cfg(test)]
mod tests;
