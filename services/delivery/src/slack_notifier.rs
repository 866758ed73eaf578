//! Slack notifications through the outbox: one checkpoint (`slack-notifications`), one
//! instance at a time (the delivery lease), in log order, at least once.
//!
//! - An advance request: a Block Kit message with Approve / Reject buttons and the quorum
//!   progress.
//! - Approvals, advances, rollbacks, pauses, resumes, guardrail breaches, completion and
//!   aborts: a status message (stage, exposure, quorum progress or guardrail status).
//! - A decision taken in Slack (`via: "slack"` with a `slack_response_url` in its metadata):
//!   the clicked message is replaced in place through `response_url` ("approved by ann; 1
//!   of 2").
//!
//! Slack's own hosts only (`hooks.slack.com`), unless an origin is configured (tests).

use std::sync::Arc;
use std::time::Duration;

use rollgate_domain::rollout::quorum::assign;
use rollgate_domain::rollout::RolloutState;
use rollgate_store::{EventStore, RecordedEvent};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use url::Url;
use uuid::Uuid;

use crate::cloudevent::{team_of, RolloutCache};
use crate::db;
use crate::engine::EngineError;
use crate::slack::approval_request_message;

pub const TARGET: &str = "slack-notifications";

#[derive(Clone, Debug)]
pub struct NotifierOptions {
    pub instance_id: String,
    /// The incoming-webhook URL.
    pub webhook_url: String,
    /// Only these teams' rollouts are announced (empty = every team).
    pub teams: Vec<String>,
    /// Where `response_url`s may point: Slack's hooks host unless set (tests).
    pub allowed_origin: Option<String>,
    pub lease_ttl: Duration,
    pub poll_interval: Duration,
    pub retry_delay: Duration,
    pub batch_size: usize,
    pub request_timeout: Duration,
}

impl NotifierOptions {
    pub fn new(webhook_url: &str) -> Self {
        Self {
            instance_id: format!("rollgate-{}", Uuid::new_v4().simple()),
            webhook_url: webhook_url.to_owned(),
            teams: Vec::new(),
            allowed_origin: None,
            lease_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            retry_delay: Duration::from_secs(2),
            batch_size: 200,
            request_timeout: Duration::from_secs(10),
        }
    }
}

pub struct SlackNotifier {
    store: Arc<dyn EventStore>,
    options: NotifierOptions,
    client: reqwest::Client,
}

pub struct NotifierHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl NotifierHandle {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// "1 of 2 approvals" for the open request, and whether its quorum is met.
fn progress(state: &RolloutState) -> Option<(String, bool)> {
    let r = state.rollout()?;
    let request = r.open_request()?;
    let stage = r.plan.stage(request.to_stage)?;
    let roles: Vec<_> = request.approvals.iter().map(|a| a.roles.clone()).collect();
    let a = assign(&stage.approvals, &roles);
    let needed: u32 = stage.approvals.iter().map(|r| r.count).sum();
    Some((
        format!("{} of {needed} approvals", a.counted.len()),
        a.is_satisfied(),
    ))
}

/// The message announcing an event, if it is one Slack hears about.
pub fn message_for(event: &RecordedEvent, state: &RolloutState) -> Option<Value> {
    let r = state.rollout()?;
    let stage = r
        .current_stage()
        .map_or_else(|| "0 %".to_owned(), |s| s.name.clone());
    let exposure = f64::from(r.exposure());
    let head = format!("*{}* (`{}`)", r.title, r.feature_key);
    let text_of = |what: String| {
        let line = format!("{head}: {what}\nStage *{stage}*, exposure {exposure}%");
        json!({
            "text": line.replace(['*', '`'], ""),
            "blocks": [ { "type": "section", "text": { "type": "mrkdwn", "text": line } } ]
        })
    };
    let p = &event.payload;
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    match event.event_type.as_str() {
        "AdvanceRequested" => {
            let request = r.open_request()?;
            let target = r.plan.stage(request.to_stage)?;
            let (progress, _) = progress(state)?;
            Some(approval_request_message(
                r.id.as_uuid(),
                request.id.as_uuid(),
                &r.title,
                &target.name,
                f64::from(target.audience.percentage),
                &progress,
            ))
        }
        "AdvanceApproved" => {
            let (progress, met) = progress(state)?;
            Some(text_of(format!(
                "{} approved; {progress}{}",
                s("approver"),
                if met { " — quorum met" } else { "" }
            )))
        }
        "AdvanceRejected" => Some(text_of(format!(
            "{} rejected the advance: {}",
            s("rejected_by"),
            s("comment")
        ))),
        "Advanced" => Some(text_of(format!("advanced by {}", s("advanced_by")))),
        "RolledBack" => Some(text_of(format!("rolled back: {}", s("reason")))),
        "Paused" => Some(text_of(format!("paused: {}", s("reason")))),
        "Resumed" => Some(text_of("resumed".to_owned())),
        "GuardrailBreached" => Some(text_of(format!(
            "guardrail breached: {} {} {} (reading {})",
            p["criterion"]["metric"].as_str().unwrap_or("?"),
            p["criterion"]["comparator"].as_str().unwrap_or("?"),
            p["criterion"]["threshold"],
            p["reading"]["value"]
        ))),
        "RolloutCompleted" => Some(text_of("completed".to_owned())),
        "RolloutAborted" => Some(text_of(format!("aborted: {}", s("reason")))),
        _ => None,
    }
}

impl SlackNotifier {
    pub fn new(store: Arc<dyn EventStore>, options: NotifierOptions) -> Result<Self, EngineError> {
        let client = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| EngineError::Client(e.to_string()))?;
        Ok(Self {
            store,
            options,
            client,
        })
    }

    pub fn spawn(self) -> NotifierHandle {
        let (stop, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let cache = RolloutCache::default();
            let mut wake = self.store.subscribe();
            // A new notifier announces what happens from now on.
            loop {
                let head = match self.store.head().await {
                    Ok(h) => h.position,
                    Err(_) => 0,
                };
                if db::ensure_checkpoint(&self.store.pool(), TARGET, head)
                    .await
                    .is_ok()
                {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.options.retry_delay) => {}
                    _ = stop_rx.changed() => return,
                }
            }
            loop {
                let delay = match self.round(&cache).await {
                    Ok(true) => continue,
                    Ok(false) => self.options.poll_interval,
                    Err(e) => {
                        tracing::warn!(error = %e, "Slack notification failed; retrying");
                        self.options.retry_delay
                    }
                };
                tokio::select! {
                    r = wake.changed() => { if r.is_err() { tokio::time::sleep(delay).await; } }
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop_rx.changed() => return,
                }
            }
        });
        NotifierHandle { stop, task }
    }

    fn allowed(&self, url: &str) -> bool {
        let Ok(u) = Url::parse(url) else { return false };
        match &self.options.allowed_origin {
            Some(origin) => Url::parse(origin).is_ok_and(|o| o.origin() == u.origin()),
            None => u.scheme() == "https" && u.host_str() == Some("hooks.slack.com"),
        }
    }

    async fn post(&self, url: &str, body: &Value) -> Result<(), EngineError> {
        let resp = self
            .client
            .post(url)
            .json(body)
            .send()
            .await
            .map_err(|e| EngineError::Client(e.to_string()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(EngineError::Client(format!(
                "Slack answered {}",
                resp.status()
            )))
        }
    }

    /// One batch; true when a full batch was handled (more may follow at once).
    pub async fn round(&self, cache: &RolloutCache) -> Result<bool, EngineError> {
        let pool = self.store.pool();
        let owner = &self.options.instance_id;
        if !db::acquire_lease(
            &pool,
            TARGET,
            owner,
            self.options.lease_ttl.as_millis() as i64,
        )
        .await?
        {
            return Ok(false);
        }
        let Some(start) = db::checkpoint(&pool, TARGET).await? else {
            return Ok(false);
        };
        let events = self
            .store
            .read_all(start, self.options.batch_size.max(1))
            .await?;
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(false);
        };
        let mut at = start;
        for e in &events {
            if !e.stream.starts_with("rollout-") {
                continue;
            }
            if !self.options.teams.is_empty()
                && !team_of(e).is_some_and(|t| self.options.teams.contains(&t))
            {
                continue;
            }
            let state = cache
                .state_at(self.store.as_ref(), &e.stream, e.version)
                .await?;
            if let Some(message) = message_for(e, &state) {
                self.post(&self.options.webhook_url, &message).await?;
            }
            if let Some(response_url) = e.metadata.get("slack_response_url").and_then(Value::as_str)
            {
                if self.allowed(response_url) {
                    let (progress, _) = progress(&state).unwrap_or_default();
                    let who = e.metadata["actor"]["id"].as_str().unwrap_or("someone");
                    let verb = if e.event_type == "AdvanceRejected" {
                        "rejected"
                    } else {
                        "approved"
                    };
                    let text = if progress.is_empty() {
                        format!("{verb} by {who}")
                    } else {
                        format!("{verb} by {who}; {progress}")
                    };
                    self.post(
                        response_url,
                        &json!({ "replace_original": true, "text": text }),
                    )
                    .await?;
                }
            }
            if !db::advance(&pool, TARGET, at, e.position, owner).await? {
                return Ok(false);
            }
            at = e.position;
        }
        db::advance(&pool, TARGET, at, last, owner).await?;
        Ok(events.len() == self.options.batch_size.max(1))
    }
}
