//! Managing webhooks (`/v1/webhooks`): what the HTTP handlers call. Registration and rotation
//! generate the signing secret here, seal it under the configured key for the log, and hand
//! the plain secret back exactly once; reads never show it.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rollgate_domain::webhook::{
    decide_webhook, evolve_webhook, Webhook, WebhookCommand, WebhookContext, WebhookError,
    WebhookId, WebhookStatus, DEFAULT_ROTATION_OVERLAP_SECONDS, STREAM_PREFIX,
};
use rollgate_domain::{Actor, Team};
use rollgate_store::{AppendOutcome, EventData, EventStore, ExpectedVersion, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::db;
use crate::engine::fold_stream;
use crate::secrets::{generate_signing_secret, SecretsKey};
use crate::url_policy::{UrlPolicy, UrlRefusal};

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The URL breaks the address policy (422 on field `url`).
    #[error("url: {0}")]
    Url(UrlRefusal),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    /// Another write got there first (409).
    #[error("the webhook changed concurrently; retry")]
    Conflict,
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Db(#[from] db::DbError),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::WrongExpectedVersion { .. } => Self::Conflict,
            other => Self::Store(other),
        }
    }
}

/// `POST /v1/webhooks` body.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub team: String,
    pub url: String,
    pub event_types: BTreeSet<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// What clients see of a webhook (never its secret).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WebhookView {
    pub id: WebhookId,
    pub team: String,
    pub url: String,
    pub event_types: BTreeSet<String>,
    pub description: Option<String>,
    pub status: WebhookStatus,
    pub failing: bool,
    pub last_error: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub disabled_reason: Option<String>,
    /// Every event at or before this position has been delivered or skipped.
    pub delivered_through: Option<u64>,
    pub registered_by: String,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: u64,
}

impl WebhookView {
    fn of(w: &Webhook, delivered_through: Option<u64>) -> Self {
        Self {
            id: w.id,
            team: w.team.to_string(),
            url: w.url.clone(),
            event_types: w.event_types.clone(),
            description: w.description.clone(),
            status: w.status,
            failing: w.health.failing,
            last_error: w.health.last_error.clone(),
            failing_since: w.health.failing_since,
            disabled_reason: w.disabled_reason.clone(),
            delivered_through,
            registered_by: w.registered_by.to_string(),
            registered_at: w.registered_at,
            updated_at: w.updated_at,
            version: w.version,
        }
    }
}

/// A registration or rotation: the view, the secret (shown this once) and where it landed.
#[derive(Clone, Debug, Serialize)]
pub struct WithSecret {
    #[serde(flatten)]
    pub webhook: WebhookView,
    pub secret: String,
    #[serde(skip)]
    pub outcome: AppendOutcome,
}

/// The management commands besides registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    Pause,
    Resume,
    Remove,
    Redeliver { after_position: u64 },
}

/// Webhook management over the store.
#[derive(Clone)]
pub struct WebhookAdmin {
    store: Arc<dyn EventStore>,
    key: SecretsKey,
    policy: UrlPolicy,
}

impl WebhookAdmin {
    pub fn new(store: Arc<dyn EventStore>, key: SecretsKey, policy: UrlPolicy) -> Self {
        Self { store, key, policy }
    }

    /// Registers webhook `id` (derive it from the Idempotency-Key: a replay then finds the
    /// stream taken and answers a conflict, never the secret again); `metadata` is the R12
    /// envelope the caller builds for its request.
    pub async fn register(
        &self,
        actor: &Actor,
        now: DateTime<Utc>,
        id: WebhookId,
        request: RegisterRequest,
        metadata: Value,
    ) -> Result<WithSecret, AdminError> {
        let team = Team::parse(&request.team).map_err(|e| {
            WebhookError::Refused(rollgate_domain::DomainError::Validation(
                e.at("team").into(),
            ))
        })?;
        // The domain checks the shape and the roles first, so a caller without the right to
        // register learns nothing from the address policy.
        let stream = id.stream();
        let secret = generate_signing_secret();
        let sealed = self.key.seal(&secret, &stream);
        let cmd = WebhookCommand::Register {
            webhook_id: id,
            team,
            url: request.url.clone(),
            event_types: request.event_types,
            description: request.description,
            secret: sealed,
        };
        let ctx = WebhookContext {
            actor: actor.clone(),
            now,
        };
        let events = decide_webhook(&Default::default(), cmd, &ctx)?;
        self.policy
            .check_url(&request.url)
            .map_err(AdminError::Url)?;
        let state = events.iter().fold(Default::default(), evolve_webhook);
        let outcome = self
            .store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                stored(&events, &metadata),
            )
            .await?;
        db::ensure_checkpoint(&self.store.pool(), &stream, outcome.last_position).await?;
        let w = state_webhook(&state)?;
        Ok(WithSecret {
            webhook: WebhookView::of(w, Some(outcome.last_position)),
            secret,
            outcome,
        })
    }

    /// Rotates the secret; the previous one keeps signing for `overlap_seconds` (default a day).
    pub async fn rotate(
        &self,
        actor: &Actor,
        now: DateTime<Utc>,
        id: WebhookId,
        overlap_seconds: Option<i64>,
        metadata: Value,
    ) -> Result<WithSecret, AdminError> {
        let stream = id.stream();
        let state = fold_stream(self.store.as_ref(), &stream).await?;
        let secret = generate_signing_secret();
        let cmd = WebhookCommand::RotateSecret {
            secret: self.key.seal(&secret, &stream),
            overlap_seconds: overlap_seconds.unwrap_or(DEFAULT_ROTATION_OVERLAP_SECONDS),
        };
        let (view, outcome) = self.apply(actor, now, id, state, cmd, metadata).await?;
        Ok(WithSecret {
            webhook: view,
            secret,
            outcome,
        })
    }

    /// Pause, resume, remove or redeliver.
    pub async fn command(
        &self,
        actor: &Actor,
        now: DateTime<Utc>,
        id: WebhookId,
        command: AdminCommand,
        metadata: Value,
    ) -> Result<(WebhookView, AppendOutcome), AdminError> {
        let state = fold_stream(self.store.as_ref(), &id.stream()).await?;
        let cmd = match command {
            AdminCommand::Pause => WebhookCommand::Pause,
            AdminCommand::Resume => WebhookCommand::Resume,
            AdminCommand::Remove => WebhookCommand::Remove,
            AdminCommand::Redeliver { after_position } => {
                WebhookCommand::Redeliver { after_position }
            }
        };
        self.apply(actor, now, id, state, cmd, metadata).await
    }

    async fn apply(
        &self,
        actor: &Actor,
        now: DateTime<Utc>,
        id: WebhookId,
        state: rollgate_domain::webhook::WebhookState,
        cmd: WebhookCommand,
        metadata: Value,
    ) -> Result<(WebhookView, AppendOutcome), AdminError> {
        let ctx = WebhookContext {
            actor: actor.clone(),
            now,
        };
        let events = decide_webhook(&state, cmd, &ctx)?;
        let version = state.version();
        let next = events.iter().fold(state, evolve_webhook);
        let outcome = self
            .store
            .append(
                &id.stream(),
                ExpectedVersion::Exact(version),
                stored(&events, &metadata),
            )
            .await?;
        let through = db::checkpoint(&self.store.pool(), &id.stream()).await?;
        Ok((WebhookView::of(state_webhook(&next)?, through), outcome))
    }

    /// One webhook, if the actor may see it (R11: otherwise not found).
    pub async fn get(&self, actor: &Actor, id: WebhookId) -> Result<WebhookView, AdminError> {
        let state = fold_stream(self.store.as_ref(), &id.stream()).await?;
        match state.webhook() {
            Some(w) if w.status != WebhookStatus::Removed && actor.may_access(&w.team) => {
                let through = db::checkpoint(&self.store.pool(), &id.stream()).await?;
                Ok(WebhookView::of(w, through))
            }
            _ => Err(WebhookError::NotFound.into()),
        }
    }

    /// The webhooks of the actor's teams (optionally one team), removed ones left out.
    pub async fn list(
        &self,
        actor: &Actor,
        team: Option<&Team>,
    ) -> Result<Vec<WebhookView>, AdminError> {
        let pool = self.store.pool();
        let mut out = Vec::new();
        for target in db::targets(&pool, STREAM_PREFIX).await? {
            let state = fold_stream(self.store.as_ref(), &target).await?;
            let Some(w) = state.webhook() else { continue };
            if w.status == WebhookStatus::Removed
                || !actor.may_access(&w.team)
                || team.is_some_and(|t| *t != w.team)
            {
                continue;
            }
            let through = db::checkpoint(&pool, &target).await?;
            out.push(WebhookView::of(w, through));
        }
        out.sort_by_key(|v| (v.registered_at, v.id));
        Ok(out)
    }

    /// The latest delivery attempts of a webhook the actor may see.
    pub async fn attempts(
        &self,
        actor: &Actor,
        id: WebhookId,
        limit: u32,
    ) -> Result<Vec<db::Attempt>, AdminError> {
        self.get(actor, id).await?;
        Ok(db::recent_attempts(&self.store.pool(), &id.stream(), limit.clamp(1, 1000)).await?)
    }
}

fn state_webhook(state: &rollgate_domain::webhook::WebhookState) -> Result<&Webhook, AdminError> {
    state
        .webhook()
        .ok_or(AdminError::Webhook(WebhookError::NotFound))
}

fn stored(events: &[rollgate_domain::webhook::WebhookEvent], metadata: &Value) -> Vec<EventData> {
    events
        .iter()
        .map(|e| EventData {
            id: Uuid::new_v4(),
            event_type: e.event_type().to_owned(),
            schema_version: e.schema_version(),
            payload: e.payload(),
            metadata: metadata.clone(),
        })
        .collect()
}
