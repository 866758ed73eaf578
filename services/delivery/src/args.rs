//! Configuration of everything in this crate, as command-line flags and environment
//! variables (`#[command(flatten)] delivery: DeliveryArgs` in the server's `ServeArgs`), and
//! [`Delivery::start`], which starts what is configured.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rollgate_store::EventStore;

use crate::engine::{DeliveryEngine, EngineHandle, EngineOptions};
use crate::github::GitHubApp;
use crate::github_reporter::{GitHubReporter, ReporterHandle, ReporterOptions};
use crate::secrets::SecretsKey;
use crate::service::WebhookAdmin;
use crate::slack_notifier::{NotifierHandle, NotifierOptions, SlackNotifier};
use crate::url_policy::UrlPolicy;

#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct DeliveryArgs {
    /// A 32-byte key (raw, 64 hex digits or base64) sealing webhook signing secrets in the
    /// log. Without it, webhooks are off.
    #[arg(long, env = "ROLLGATE_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,

    /// Allow webhook targets in private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7).
    #[arg(long, env = "ROLLGATE_WEBHOOKS_ALLOW_PRIVATE_NETWORKS")]
    pub webhooks_allow_private_networks: bool,

    /// Allow webhook targets on loopback addresses (tests).
    #[arg(long, env = "ROLLGATE_WEBHOOKS_ALLOW_LOOPBACK")]
    pub webhooks_allow_loopback: bool,

    /// Timeout of one webhook request.
    #[arg(long, env = "ROLLGATE_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10)]
    pub webhook_timeout_seconds: u64,

    /// Attempts at one event before a webhook is marked failing.
    #[arg(long, env = "ROLLGATE_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8)]
    pub webhook_max_attempts: u32,

    /// Longest pause between retries.
    #[arg(
        long,
        env = "ROLLGATE_WEBHOOK_MAX_BACKOFF_SECONDS",
        default_value_t = 600
    )]
    pub webhook_max_backoff_seconds: u64,

    /// Webhook requests in flight per instance.
    #[arg(long, env = "ROLLGATE_WEBHOOK_CONCURRENCY", default_value_t = 32)]
    pub webhook_concurrency: usize,

    /// Time to live of a delivery lease (how soon another instance takes over after a crash).
    #[arg(long, env = "ROLLGATE_DELIVERY_LEASE_SECONDS", default_value_t = 30)]
    pub delivery_lease_seconds: u64,

    /// GitHub App ID (deployment protection rules). Needs the two files below.
    #[arg(
        long,
        env = "ROLLGATE_GITHUB_APP_ID",
        requires_all = ["github_private_key_file", "github_webhook_secret_file"]
    )]
    pub github_app_id: Option<String>,

    /// The GitHub App's private key (PEM).
    #[arg(long, env = "ROLLGATE_GITHUB_PRIVATE_KEY_FILE")]
    pub github_private_key_file: Option<PathBuf>,

    /// The GitHub App's webhook secret.
    #[arg(long, env = "ROLLGATE_GITHUB_WEBHOOK_SECRET_FILE")]
    pub github_webhook_secret_file: Option<PathBuf>,

    /// The GitHub API (GitHub Enterprise Server: `https://HOST/api/v3`).
    #[arg(
        long,
        env = "ROLLGATE_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,

    /// Slack signing secret (interactions). Without it, the interactions endpoint is off.
    #[arg(long, env = "ROLLGATE_SLACK_SIGNING_SECRET_FILE")]
    pub slack_signing_secret_file: Option<PathBuf>,

    /// A file holding the Slack incoming-webhook URL for notifications.
    #[arg(long, env = "ROLLGATE_SLACK_WEBHOOK_URL_FILE")]
    pub slack_webhook_url_file: Option<PathBuf>,

    /// Announce only these teams' rollouts in Slack (comma-separated; default all).
    #[arg(long, env = "ROLLGATE_SLACK_TEAMS", value_delimiter = ',')]
    pub slack_teams: Vec<String>,
}

fn read_secret(path: &PathBuf, what: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text.trim().as_bytes().to_vec())
}

impl DeliveryArgs {
    pub fn url_policy(&self) -> UrlPolicy {
        UrlPolicy {
            allow_private: self.webhooks_allow_private_networks,
            allow_loopback: self.webhooks_allow_loopback,
        }
    }

    pub fn engine_options(&self, instance_id: &str) -> EngineOptions {
        EngineOptions {
            instance_id: instance_id.to_owned(),
            request_timeout: Duration::from_secs(self.webhook_timeout_seconds.max(1)),
            max_attempts: self.webhook_max_attempts.max(1),
            max_backoff: Duration::from_secs(self.webhook_max_backoff_seconds.max(1)),
            max_concurrent_requests: self.webhook_concurrency.max(1),
            lease_ttl: Duration::from_secs(self.delivery_lease_seconds.max(2)),
            url_policy: self.url_policy(),
            ..EngineOptions::default()
        }
    }

    pub fn secrets_key(&self) -> Result<Option<SecretsKey>, String> {
        self.secrets_key_file
            .as_ref()
            .map(|p| SecretsKey::from_file(p).map_err(|e| e.to_string()))
            .transpose()
    }

    /// The GitHub webhook secret, when GitHub is configured.
    pub fn github_webhook_secret(&self) -> Result<Option<Vec<u8>>, String> {
        match (&self.github_app_id, &self.github_webhook_secret_file) {
            (Some(_), Some(p)) => read_secret(p, "GitHub webhook secret").map(Some),
            _ => Ok(None),
        }
    }

    pub fn slack_signing_secret(&self) -> Result<Option<Vec<u8>>, String> {
        self.slack_signing_secret_file
            .as_ref()
            .map(|p| read_secret(p, "Slack signing secret"))
            .transpose()
    }
}

/// What [`Delivery::start`] started; handlers use `webhooks`, `github` and the secrets.
pub struct Delivery {
    pub webhooks: Option<WebhookAdmin>,
    pub github: Option<Arc<GitHubApp>>,
    pub github_webhook_secret: Option<Vec<u8>>,
    pub slack_signing_secret: Option<Vec<u8>>,
    engine: Option<EngineHandle>,
    reporter: Option<ReporterHandle>,
    notifier: Option<NotifierHandle>,
}

impl Delivery {
    /// Starts the delivery engine (with a secrets key), the GitHub reporter (with an App) and
    /// the Slack notifier (with a webhook URL). Nothing configured starts nothing, so an
    /// instance without integrations does no extra work.
    pub fn start(
        store: Arc<dyn EventStore>,
        args: &DeliveryArgs,
        instance_id: &str,
    ) -> Result<Self, String> {
        let key = args.secrets_key()?;
        let (webhooks, engine) = match key {
            Some(key) => {
                let admin = WebhookAdmin::new(store.clone(), key.clone(), args.url_policy());
                let engine =
                    DeliveryEngine::new(store.clone(), key, args.engine_options(instance_id))
                        .map_err(|e| e.to_string())?
                        .spawn();
                (Some(admin), Some(engine))
            }
            None => (None, None),
        };
        let (github, reporter) = match (&args.github_app_id, &args.github_private_key_file) {
            (Some(app_id), Some(key_file)) => {
                let pem = std::fs::read(key_file)
                    .map_err(|e| format!("GitHub private key {}: {e}", key_file.display()))?;
                let app = Arc::new(
                    GitHubApp::new(app_id, &pem, &args.github_api_url)
                        .map_err(|e| e.to_string())?,
                );
                let reporter = GitHubReporter::new(
                    store.clone(),
                    app.clone(),
                    ReporterOptions {
                        instance_id: instance_id.to_owned(),
                        lease_ttl: Duration::from_secs(args.delivery_lease_seconds.max(2)),
                        ..ReporterOptions::default()
                    },
                )
                .spawn();
                (Some(app), Some(reporter))
            }
            _ => (None, None),
        };
        let notifier = match &args.slack_webhook_url_file {
            Some(p) => {
                let url = String::from_utf8(read_secret(p, "Slack webhook URL")?)
                    .map_err(|e| format!("Slack webhook URL: {e}"))?;
                let mut options = NotifierOptions::new(&url);
                options.instance_id = instance_id.to_owned();
                options.teams = args.slack_teams.clone();
                options.lease_ttl = Duration::from_secs(args.delivery_lease_seconds.max(2));
                Some(
                    SlackNotifier::new(store, options)
                        .map_err(|e| e.to_string())?
                        .spawn(),
                )
            }
            None => None,
        };
        Ok(Self {
            webhooks,
            github,
            github_webhook_secret: args.github_webhook_secret()?,
            slack_signing_secret: args.slack_signing_secret()?,
            engine,
            reporter,
            notifier,
        })
    }

    /// Stops everything after its current request and releases the leases.
    pub async fn shutdown(self) {
        if let Some(e) = self.engine {
            e.shutdown().await;
        }
        if let Some(r) = self.reporter {
            r.shutdown().await;
        }
        if let Some(n) = self.notifier {
            n.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        delivery: DeliveryArgs,
    }

    #[test]
    fn flags_parse_with_defaults() {
        let cli = Cli::parse_from(["rollgate", "--webhooks-allow-loopback"]);
        let a = cli.delivery;
        assert!(a.webhooks_allow_loopback && !a.webhooks_allow_private_networks);
        assert_eq!(a.webhook_max_attempts, 8);
        assert_eq!(a.github_api_url, "https://api.github.com");
        assert!(
            a.secrets_key().unwrap().is_none(),
            "webhooks are off without a key"
        );
        let o = a.engine_options("i");
        assert_eq!(o.request_timeout, Duration::from_secs(10));
        assert!(o.url_policy.allow_loopback);
        // The GitHub App ID needs its key and webhook secret files.
        assert!(Cli::try_parse_from(["rollgate", "--github-app-id", "1"]).is_err());
    }
}
