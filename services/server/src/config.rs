//! Configuration: command-line flags, each with an environment variable (clap).
//!
//! With no configuration at all, `rollgate serve` uses SQLite at `./rollgate.db`, listens
//! on 127.0.0.1:8080 and runs in development mode (a local Ed25519 key in `./.rollgate/`).

use std::path::PathBuf;

use clap::Args;
use rollgate_auth::{AuthConfig, KeySource, VerifyOptions};

/// Where the event log lives.
#[derive(Args, Clone, Debug)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://PATH` (the embedded default) or `postgres://…`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://rollgate.db")]
    pub database_url: String,

    /// Largest accepted event (payload plus metadata), in bytes.
    #[arg(long, env = "ROLLGATE_MAX_EVENT_BYTES", default_value_t = 1024 * 1024)]
    pub max_event_bytes: usize,

    /// Database connection pool size.
    #[arg(long, env = "ROLLGATE_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Longest wait for a PostgreSQL connection, in milliseconds; while the database is
    /// unreachable, requests answer 503 after this long.
    #[arg(long, env = "ROLLGATE_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 3000)]
    pub db_acquire_timeout_ms: u64,
}

/// How bearer tokens are verified.
#[derive(Args, Clone, Debug)]
pub struct AuthArgs {
    /// PEM file with the public key (RSA, EC P-256 or Ed25519) or certificate that signs tokens.
    #[arg(long, env = "ROLLGATE_JWT_PUBLIC_KEY", conflicts_with_all = ["jwt_jwks", "jwt_hs256_secret"])]
    pub jwt_public_key: Option<PathBuf>,

    /// JWKS file with the token signing keys (selected by `kid`).
    #[arg(long, env = "ROLLGATE_JWT_JWKS", conflicts_with = "jwt_hs256_secret")]
    pub jwt_jwks: Option<PathBuf>,

    /// HS256 shared secret (development only; needs --allow-hs256).
    #[arg(long, env = "ROLLGATE_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,

    /// Accept HS256 tokens (development only).
    #[arg(long, env = "ROLLGATE_ALLOW_HS256")]
    pub allow_hs256: bool,

    /// Required `iss` claim.
    #[arg(long, env = "ROLLGATE_JWT_ISSUER", default_value = "rollgate")]
    pub jwt_issuer: String,

    /// Required `aud` claim.
    #[arg(long, env = "ROLLGATE_JWT_AUDIENCE", default_value = "rollgate")]
    pub jwt_audience: String,

    /// Claim holding the caller's roles.
    #[arg(long, env = "ROLLGATE_ROLES_CLAIM", default_value = "roles")]
    pub roles_claim: String,

    /// Claim holding the caller's teams (`*` = every team).
    #[arg(long, env = "ROLLGATE_TEAMS_CLAIM", default_value = "teams")]
    pub teams_claim: String,

    /// Clock leeway for `exp`, `nbf` and `iat`, in seconds.
    #[arg(long, env = "ROLLGATE_JWT_LEEWAY_SECONDS", default_value_t = 30)]
    pub jwt_leeway_seconds: u64,

    /// Directory of the development key pair, used when no key is configured.
    #[arg(long, env = "ROLLGATE_DEV_KEY_DIR", default_value = ".rollgate")]
    pub dev_key_dir: PathBuf,

    /// Use the development key pair although the server is not in the zero-configuration
    /// case (loopback listen address and embedded SQLite); development only.
    #[arg(long, env = "ROLLGATE_DEV_KEYS")]
    pub dev_keys: bool,

    /// Longest accepted token lifetime (`exp - iat`) in seconds; tokens without `iat` are
    /// refused. 0 accepts any lifetime.
    #[arg(long, env = "ROLLGATE_JWT_MAX_LIFETIME_SECONDS", default_value_t = rollgate_auth::DEFAULT_MAX_LIFETIME_SECONDS)]
    pub jwt_max_lifetime_seconds: u64,

    /// OpenID Connect issuer whose tokens are accepted; its keys are discovered from
    /// `{issuer}/.well-known/openid-configuration`.
    #[arg(long, env = "ROLLGATE_OIDC_ISSUER", requires = "oidc_client_id", conflicts_with_all = ["jwt_public_key", "jwt_jwks", "jwt_hs256_secret"])]
    pub oidc_issuer: Option<String>,

    /// The console's client id at the OpenID Connect issuer (also the required `aud`
    /// unless --oidc-audience is given).
    #[arg(long, env = "ROLLGATE_OIDC_CLIENT_ID", requires = "oidc_issuer")]
    pub oidc_client_id: Option<String>,

    /// The `aud` required of the OpenID Connect issuer's tokens (default: the client id).
    #[arg(long, env = "ROLLGATE_OIDC_AUDIENCE", requires = "oidc_issuer")]
    pub oidc_audience: Option<String>,

    /// Shortest time between two fetches of the OpenID Connect issuer's JWKS caused by
    /// tokens naming an unknown `kid`, in seconds.
    #[arg(long, env = "ROLLGATE_OIDC_JWKS_REFRESH_SECONDS", default_value_t = rollgate_auth::DEFAULT_JWKS_REFRESH_INTERVAL.as_secs())]
    pub oidc_jwks_refresh_seconds: u64,
}

impl AuthArgs {
    pub fn auth_config(&self) -> AuthConfig {
        AuthConfig {
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            roles_claim: self.roles_claim.clone(),
            teams_claim: self.teams_claim.clone(),
            leeway_seconds: self.jwt_leeway_seconds,
            allow_hs256: self.allow_hs256,
        }
    }

    pub fn verify_options(&self) -> VerifyOptions {
        VerifyOptions {
            max_lifetime_seconds: Some(self.jwt_max_lifetime_seconds).filter(|&s| s > 0),
            jwks_refresh_interval: std::time::Duration::from_secs(self.oidc_jwks_refresh_seconds),
            ..VerifyOptions::default()
        }
    }

    /// The configured key source; the development key directory when none is given.
    pub fn key_source(&self) -> KeySource {
        if let (Some(issuer), Some(client_id)) = (&self.oidc_issuer, &self.oidc_client_id) {
            KeySource::Oidc {
                issuer: issuer.clone(),
                audience: self
                    .oidc_audience
                    .clone()
                    .unwrap_or_else(|| client_id.clone()),
            }
        } else if let Some(p) = &self.jwt_public_key {
            KeySource::PemFile(p.clone())
        } else if let Some(p) = &self.jwt_jwks {
            KeySource::JwksFile(p.clone())
        } else if let Some(s) = &self.jwt_hs256_secret {
            KeySource::Hs256Secret(s.as_bytes().to_vec())
        } else {
            KeySource::DevKeyDir(self.dev_key_dir.clone())
        }
    }
}

/// `rollgate serve`.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ROLLGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Separate address for `GET /metrics` (by default it is served on the main address).
    #[arg(long, env = "ROLLGATE_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "ROLLGATE_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// Longest a read with `min_position` waits for the projections, in milliseconds.
    #[arg(long, env = "ROLLGATE_READ_WAIT_MS", default_value_t = 5000)]
    pub read_wait_ms: u64,

    /// Most event streams (`GET /v1/events/stream`) open at once on this instance.
    #[arg(long, env = "ROLLGATE_MAX_EVENT_STREAMS", default_value_t = crate::live::StreamLimits::default().total)]
    pub max_event_streams: usize,

    /// Most event streams open at once for one token subject.
    #[arg(long, env = "ROLLGATE_MAX_EVENT_STREAMS_PER_SUBJECT", default_value_t = crate::live::StreamLimits::default().per_subject)]
    pub max_event_streams_per_subject: usize,

    /// Log format: `json` (default) or `text`.
    #[arg(long, env = "ROLLGATE_LOG_FORMAT", default_value = "json")]
    pub log_format: String,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub prometheus: rollgate_prometheus::PrometheusArgs,

    #[command(flatten)]
    pub delivery: rollgate_delivery::DeliveryArgs,
}

impl ServeArgs {
    /// Development keys are used without being asked only in the zero-configuration case
    /// (a loopback listen address and embedded SQLite); anywhere else only with
    /// `--dev-keys`. The refusal is one line naming the key options.
    pub fn check_dev_keys(&self) -> Result<(), rollgate_auth::DevKeysRefused> {
        if !matches!(self.auth.key_source(), KeySource::DevKeyDir(_)) {
            return Ok(());
        }
        rollgate_auth::dev_keys_permitted(
            &self.listen,
            rollgate_auth::is_embedded_sqlite_url(&self.database.database_url),
            self.auth.dev_keys,
        )
        .map(|_| ())
    }
}
