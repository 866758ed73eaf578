//! The server-level Prometheus connection as command-line flags (flattened into `rollgate
//! serve`'s arguments), and the files that hold its secrets.

use std::path::PathBuf;
use std::time::Duration;

use crate::client::{Auth, PrometheusConfig};

#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct PrometheusArgs {
    /// Base URL of the Prometheus HTTP API (e.g. `http://prometheus:9090`). When set, query
    /// criteria are validated at plan creation and evaluated while their stage runs.
    #[arg(long, env = "ROLLGATE_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,

    /// A file holding a bearer token for Prometheus.
    #[arg(long, env = "ROLLGATE_PROMETHEUS_BEARER_TOKEN_FILE", conflicts_with_all = ["prometheus_username", "prometheus_password_file"])]
    pub prometheus_bearer_token_file: Option<PathBuf>,

    /// User name for HTTP basic authentication to Prometheus (with `--prometheus-password-file`).
    #[arg(
        long,
        env = "ROLLGATE_PROMETHEUS_USERNAME",
        requires = "prometheus_password_file"
    )]
    pub prometheus_username: Option<String>,

    /// A file holding the basic-authentication password.
    #[arg(
        long,
        env = "ROLLGATE_PROMETHEUS_PASSWORD_FILE",
        requires = "prometheus_username"
    )]
    pub prometheus_password_file: Option<PathBuf>,

    /// The longest one Prometheus query may take, in milliseconds.
    #[arg(long, env = "ROLLGATE_PROMETHEUS_TIMEOUT_MS", default_value_t = 5000)]
    pub prometheus_timeout_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: String },
    #[error("{0} is empty")]
    Empty(String),
    #[error("Prometheus credentials are given but --prometheus-url is not")]
    CredentialsWithoutUrl,
}

fn secret(path: &PathBuf) -> Result<String, ArgsError> {
    let text = std::fs::read_to_string(path).map_err(|e| ArgsError::Read {
        path: path.display().to_string(),
        error: e.to_string(),
    })?;
    // A trailing newline is not part of the secret.
    let text = text.trim_end_matches(['\n', '\r']).to_owned();
    if text.is_empty() {
        return Err(ArgsError::Empty(path.display().to_string()));
    }
    Ok(text)
}

impl PrometheusArgs {
    /// The connection, or `None` when no Prometheus is configured. Reads the secret files.
    pub fn config(&self) -> Result<Option<PrometheusConfig>, ArgsError> {
        let Some(url) = &self.prometheus_url else {
            if self.prometheus_bearer_token_file.is_some() || self.prometheus_username.is_some() {
                return Err(ArgsError::CredentialsWithoutUrl);
            }
            return Ok(None);
        };
        let auth = match (
            &self.prometheus_bearer_token_file,
            &self.prometheus_username,
            &self.prometheus_password_file,
        ) {
            (Some(token), _, _) => Auth::Bearer(secret(token)?),
            (None, Some(username), Some(password)) => Auth::Basic {
                username: username.clone(),
                password: secret(password)?,
            },
            _ => Auth::None,
        };
        Ok(Some(PrometheusConfig {
            url: url.clone(),
            auth,
            timeout: Duration::from_millis(self.prometheus_timeout_ms),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        prometheus: PrometheusArgs,
    }

    fn parse(args: &[&str]) -> Result<PrometheusArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("rollgate").chain(args.iter().copied()))
            .map(|c| c.prometheus)
    }

    #[test]
    fn no_url_no_prometheus() {
        assert_eq!(parse(&[]).unwrap().config().unwrap(), None);
    }

    #[test]
    fn bearer_token_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let args = parse(&[
            "--prometheus-url",
            "http://127.0.0.1:9090",
            "--prometheus-bearer-token-file",
            token.to_str().unwrap(),
            "--prometheus-timeout-ms",
            "1500",
        ])
        .unwrap();
        let config = args.config().unwrap().unwrap();
        assert_eq!(config.auth, Auth::Bearer("s3cret".into()));
        assert_eq!(config.timeout, Duration::from_millis(1500));
    }

    #[test]
    fn basic_auth_needs_both_parts_and_excludes_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2").unwrap();
        let pw = pw.to_str().unwrap();
        let args = parse(&[
            "--prometheus-url",
            "http://p:9090",
            "--prometheus-username",
            "rollgate",
            "--prometheus-password-file",
            pw,
        ])
        .unwrap();
        assert_eq!(
            args.config().unwrap().unwrap().auth,
            Auth::Basic {
                username: "rollgate".into(),
                password: "hunter2".into()
            }
        );
        assert!(parse(&["--prometheus-url", "http://p", "--prometheus-username", "u"]).is_err());
        assert!(parse(&[
            "--prometheus-url",
            "http://p",
            "--prometheus-bearer-token-file",
            pw,
            "--prometheus-username",
            "u",
            "--prometheus-password-file",
            pw
        ])
        .is_err());
    }

    #[test]
    fn unreadable_or_empty_secrets_and_credentials_without_url_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let missing = dir.path().join("missing");
        for file in [&empty, &missing] {
            let args = parse(&[
                "--prometheus-url",
                "http://p",
                "--prometheus-bearer-token-file",
                file.to_str().unwrap(),
            ])
            .unwrap();
            assert!(args.config().is_err());
        }
        let args = parse(&["--prometheus-bearer-token-file", empty.to_str().unwrap()]).unwrap();
        assert!(matches!(
            args.config(),
            Err(ArgsError::CredentialsWithoutUrl)
        ));
    }
}
