//! GitHub deployment protection rules: rollgate as a GitHub App's custom rule.
//!
//! In: `POST /v1/integrations/github/webhook` with `X-GitHub-Event: deployment_protection_rule`,
//! `X-GitHub-Delivery` (the same on a redelivery) and `X-Hub-Signature-256` (HMAC-SHA256 of
//! the raw body with the App's webhook secret, checked in constant time). [`parse_request`]
//! verifies and reads it; [`record_request`] records it once per delivery id (the delivery is
//! the stream, written with "no stream" expected: a redelivery writes nothing).
//!
//! Out: decisions and progress comments are POSTed to `deployment_callback_url` as the App:
//! an RS256 JWT (`iss` = App ID, `iat` 60 s in the past, `exp` 9 minutes ahead) is exchanged
//! at `POST /app/installations/{id}/access_tokens` for an installation token, cached until
//! five minutes before it expires ([`GitHubApp`]). The API base URL is configurable (GitHub
//! Enterprise Server, tests); callbacks elsewhere than under it are refused.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rollgate_store::{AppendOutcome, EventData, EventStore, ExpectedVersion, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;
use url::Url;
use uuid::Uuid;

use crate::signature::github_signature_valid;

/// Streams of recorded deployment protection requests start with this.
pub const STREAM_PREFIX: &str = "github-delivery-";

/// The event recording a request.
pub const REQUESTED_EVENT: &str = "GitHubDeploymentProtectionRequested";

/// Why an incoming GitHub webhook is not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GitHubRefusal {
    /// 401: missing or wrong `X-Hub-Signature-256`.
    #[error("the X-Hub-Signature-256 signature does not match")]
    BadSignature,
    /// 202, nothing recorded: another event or action than `deployment_protection_rule` /
    /// `requested` (GitHub's ping included).
    #[error("ignored event {0}")]
    Ignored(String),
    /// 400: a signed body that is not what GitHub documents.
    #[error("invalid deployment_protection_rule body: {0}")]
    Invalid(String),
}

/// Header values of one incoming request.
#[derive(Clone, Debug, Default)]
pub struct GitHubHeaders {
    pub event: Option<String>,
    pub delivery: Option<String>,
    pub signature: Option<String>,
}

/// A verified `deployment_protection_rule` / `requested` delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentProtectionRequest {
    pub delivery_id: String,
    /// `owner/name`.
    pub repository: String,
    pub environment: String,
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub event: String,
    pub deployment_callback_url: String,
    pub installation_id: u64,
}

/// Verifies the signature first (nothing else is looked at before), then reads the body.
pub fn parse_request(
    webhook_secret: &[u8],
    headers: &GitHubHeaders,
    body: &[u8],
) -> Result<DeploymentProtectionRequest, GitHubRefusal> {
    let signature = headers
        .signature
        .as_deref()
        .ok_or(GitHubRefusal::BadSignature)?;
    if !github_signature_valid(webhook_secret, signature, body) {
        return Err(GitHubRefusal::BadSignature);
    }
    let event = headers.event.as_deref().unwrap_or("");
    if event != "deployment_protection_rule" {
        return Err(GitHubRefusal::Ignored(event.to_owned()));
    }
    let delivery_id = headers
        .delivery
        .clone()
        .filter(|d| {
            !d.is_empty()
                && d.len() <= 64
                && d.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .ok_or_else(|| GitHubRefusal::Invalid("X-GitHub-Delivery missing or malformed".into()))?;
    let v: Value =
        serde_json::from_slice(body).map_err(|e| GitHubRefusal::Invalid(e.to_string()))?;
    let action = v["action"].as_str().unwrap_or("");
    if action != "requested" {
        return Err(GitHubRefusal::Ignored(format!("{event}/{action}")));
    }
    let text = |ptr: &str| -> Result<String, GitHubRefusal> {
        v.pointer(ptr)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| GitHubRefusal::Invalid(format!("{ptr} is missing")))
    };
    Ok(DeploymentProtectionRequest {
        delivery_id,
        repository: text("/repository/full_name")?,
        environment: text("/environment")?,
        sha: text("/sha")?,
        git_ref: text("/ref")?,
        event: text("/event").unwrap_or_default(),
        deployment_callback_url: text("/deployment_callback_url")?,
        installation_id: v
            .pointer("/installation/id")
            .and_then(Value::as_u64)
            .ok_or_else(|| GitHubRefusal::Invalid("/installation/id is missing".into()))?,
    })
}

/// Whether a request was recorded now or had been before (a redelivery).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recorded {
    New(AppendOutcome),
    Duplicate,
}

/// Records a request bound to `rollout_id` (the rollout whose binding names the repository
/// and environment; `None` when no rollout does: the request is kept and answered rejected by
/// the reporter). Once per delivery id.
pub async fn record_request(
    store: &dyn EventStore,
    request: &DeploymentProtectionRequest,
    rollout_id: Option<Uuid>,
    team: Option<&str>,
    at: DateTime<Utc>,
) -> Result<Recorded, StoreError> {
    let stream = format!("{STREAM_PREFIX}{}", request.delivery_id);
    let mut payload = serde_json::to_value(request).expect("serializes");
    payload["rollout_id"] = json!(rollout_id);
    payload["at"] = json!(at);
    let data = EventData {
        id: Uuid::new_v4(),
        event_type: REQUESTED_EVENT.to_owned(),
        schema_version: 1,
        payload,
        metadata: json!({
            "actor": { "id": "github", "roles": ["service"] },
            "team": team,
            "request_id": request.delivery_id,
            "correlation_id": request.delivery_id,
            "causation_id": null,
            "policy_version": null,
        }),
    };
    match store
        .append(&stream, ExpectedVersion::NoStream, vec![data])
        .await
    {
        Ok(outcome) => {
            // The run is reported from here on (see `github_reporter`).
            crate::db::ensure_checkpoint(&store.pool(), &stream, outcome.last_position)
                .await
                .map_err(|e| StoreError::Database(e.to_string()))?;
            Ok(Recorded::New(outcome))
        }
        Err(StoreError::WrongExpectedVersion { .. }) => Ok(Recorded::Duplicate),
        Err(e) => Err(e),
    }
}

/// The body POSTed to `deployment_callback_url`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub environment_name: String,
    /// `approved` or `rejected`; absent for a progress comment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    pub comment: String,
}

impl Review {
    /// GitHub takes status comments of up to 1,024 characters.
    pub fn new(environment: &str, state: Option<&str>, comment: &str) -> Self {
        let mut comment = comment.to_owned();
        if comment.len() > 1024 {
            let mut cut = 1021;
            while !comment.is_char_boundary(cut) {
                cut -= 1;
            }
            comment.truncate(cut);
            comment.push_str("...");
        }
        Self {
            environment_name: environment.to_owned(),
            state: state.map(str::to_owned),
            comment,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub App configuration: {0}")]
    Config(String),
    #[error("GitHub API: {0}")]
    Api(String),
    #[error("callback URL {0} is not under the configured GitHub API")]
    ForeignCallback(String),
}

#[derive(Clone, Debug)]
struct CachedToken {
    token: String,
    expires_at: DateTime<Utc>,
}

/// The App's identity toward the GitHub API.
pub struct GitHubApp {
    app_id: String,
    key: EncodingKey,
    api_base: Url,
    client: reqwest::Client,
    tokens: Mutex<HashMap<u64, CachedToken>>,
}

#[derive(Serialize)]
struct AppClaims<'a> {
    iat: i64,
    exp: i64,
    iss: &'a str,
}

impl GitHubApp {
    /// `private_key_pem` is the App's private key as GitHub hands it out (PKCS#1 or PKCS#8 PEM).
    pub fn new(app_id: &str, private_key_pem: &[u8], api_base: &str) -> Result<Self, GitHubError> {
        let key = EncodingKey::from_rsa_pem(private_key_pem)
            .map_err(|e| GitHubError::Config(format!("private key: {e}")))?;
        let mut api_base =
            Url::parse(api_base).map_err(|e| GitHubError::Config(format!("API base URL: {e}")))?;
        if !api_base.path().ends_with('/') {
            let path = format!("{}/", api_base.path());
            api_base.set_path(&path);
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GitHubError::Config(e.to_string()))?;
        Ok(Self {
            app_id: app_id.to_owned(),
            key,
            api_base,
            client,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The App JWT: RS256, `iss` = App ID, issued 60 s ago (clock drift), expiring in 9 min.
    pub fn app_jwt(&self, now: DateTime<Utc>) -> Result<String, GitHubError> {
        let claims = AppClaims {
            iat: now.timestamp() - 60,
            exp: now.timestamp() + 9 * 60,
            iss: &self.app_id,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|e| GitHubError::Config(format!("signing the App JWT: {e}")))
    }

    /// An installation token, from the cache while it has more than five minutes left.
    pub async fn installation_token(&self, installation_id: u64) -> Result<String, GitHubError> {
        let now = Utc::now();
        let mut tokens = self.tokens.lock().await;
        if let Some(t) = tokens.get(&installation_id) {
            if t.expires_at - chrono::Duration::minutes(5) > now {
                return Ok(t.token.clone());
            }
        }
        let url = self
            .api_base
            .join(&format!(
                "app/installations/{installation_id}/access_tokens"
            ))
            .map_err(|e| GitHubError::Config(e.to_string()))?;
        let resp = self
            .client
            .post(url)
            .bearer_auth(self.app_jwt(now)?)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .send()
            .await
            .map_err(|e| GitHubError::Api(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(GitHubError::Api(format!(
                "installation token: HTTP {status}"
            )));
        }
        #[derive(Deserialize)]
        struct TokenAnswer {
            token: String,
            expires_at: DateTime<Utc>,
        }
        let answer: TokenAnswer = resp
            .json()
            .await
            .map_err(|e| GitHubError::Api(format!("installation token answer: {e}")))?;
        tokens.insert(
            installation_id,
            CachedToken {
                token: answer.token.clone(),
                expires_at: answer.expires_at,
            },
        );
        Ok(answer.token)
    }

    /// POSTs a review (decision or progress comment) to the run's callback URL.
    pub async fn review(
        &self,
        installation_id: u64,
        callback_url: &str,
        review: &Review,
    ) -> Result<(), GitHubError> {
        let url = Url::parse(callback_url)
            .map_err(|_| GitHubError::ForeignCallback(callback_url.to_owned()))?;
        if url.origin() != self.api_base.origin()
            || !url.path().starts_with(self.api_base.path())
            || !url.path().ends_with("/deployment_protection_rule")
        {
            return Err(GitHubError::ForeignCallback(callback_url.to_owned()));
        }
        let token = self.installation_token(installation_id).await?;
        let resp = self
            .client
            .post(url)
            .bearer_auth(token)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .json(review)
            .send()
            .await
            .map_err(|e| GitHubError::Api(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(GitHubError::Api(format!("callback: HTTP {status}")))
        }
    }
}

/// The progress comment while approvals are collected, e.g.
/// "2 of 3 approvals: alice, bob; waiting for one sre".
pub fn progress_comment(approvers: &[String], needed: u32, waiting_for: &[String]) -> String {
    let mut s = format!(
        "{} of {needed} approvals: {}",
        approvers.len(),
        if approvers.is_empty() {
            "none yet".to_owned()
        } else {
            approvers.join(", ")
        }
    );
    if !waiting_for.is_empty() {
        s.push_str("; waiting for ");
        s.push_str(&waiting_for.join(", "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        m.update(body);
        format!("sha256={}", hex::encode(m.finalize().into_bytes()))
    }

    const BODY: &str =
        include_str!("../../../tests/fixtures/github/deployment-protection-rule-requested.json");

    fn headers(sig: Option<String>) -> GitHubHeaders {
        GitHubHeaders {
            event: Some("deployment_protection_rule".into()),
            delivery: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
            signature: sig,
        }
    }

    #[test]
    fn the_documented_body_parses_once_signed() {
        let r = parse_request(
            b"s3cret",
            &headers(Some(sign(b"s3cret", BODY.as_bytes()))),
            BODY.as_bytes(),
        )
        .unwrap();
        assert_eq!(r.repository, "octo-org/web");
        assert_eq!(r.environment, "production");
        assert_eq!(r.installation_id, 12_345_678);
        assert!(r
            .deployment_callback_url
            .ends_with("/deployment_protection_rule"));
    }

    #[test]
    fn bad_or_missing_signatures_are_refused_before_reading() {
        let body = BODY.as_bytes();
        assert_eq!(
            parse_request(b"s3cret", &headers(None), body),
            Err(GitHubRefusal::BadSignature)
        );
        assert_eq!(
            parse_request(b"s3cret", &headers(Some(sign(b"other", body))), body),
            Err(GitHubRefusal::BadSignature)
        );
        let garbage = b"not json";
        assert_eq!(
            parse_request(b"s3cret", &headers(Some(sign(b"other", garbage))), garbage),
            Err(GitHubRefusal::BadSignature)
        );
        let mut h = headers(Some(sign(b"s3cret", body)));
        h.event = Some("ping".into());
        assert!(matches!(
            parse_request(b"s3cret", &h, body),
            Err(GitHubRefusal::Ignored(_))
        ));
    }

    #[test]
    fn reviews_match_the_documented_callback_bodies() {
        let approved: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/github/deployment-protection-rule-callback-approved.json"
        ))
        .unwrap();
        let r = Review::new("production", Some("approved"), "All health checks passed.");
        assert_eq!(serde_json::to_value(&r).unwrap(), approved);
        let comment: Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/github/deployment-protection-rule-callback-comment.json"
        ))
        .unwrap();
        let text = progress_comment(&["alice".into(), "bob".into()], 3, &["one sre".into()]);
        let r = Review::new("production", None, &text);
        assert_eq!(serde_json::to_value(&r).unwrap(), comment);
        assert!(Review::new("p", None, &"x".repeat(2000)).comment.len() <= 1024);
    }
}
