//! Answers GitHub deployment protection rules through the outbox.
//!
//! Each recorded request (stream `github-delivery-{id}`) is a target with its own checkpoint,
//! created at the request's position. The reporter follows the log after it for the bound
//! rollout's events and POSTs to the run's callback, in order, at least once (the checkpoint
//! moves after GitHub accepted the call):
//! - an advance requested or approved while the quorum is not met: a progress comment
//!   ("1 of 3 approvals: alice; waiting for 1 sre, 1 approver"), at most `max_comments`
//!   (GitHub keeps 10 per deployment);
//! - the quorum met, or the advance executed: `approved`;
//! - a rejection, a rollback or an abort: `rejected`;
//! - no rollout bound to the repository and environment: `rejected` at once.
//!
//! A decision is recorded on the request's stream (`GitHubDeploymentProtectionDecided`) and
//! ends the run. One instance reports a run at a time (the delivery lease).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rollgate_domain::rollout::quorum::assign;
use rollgate_domain::rollout::{RequestStatus, RolloutState};
use rollgate_store::{read_whole_stream, EventData, EventStore, ExpectedVersion, RecordedEvent};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::cloudevent::RolloutCache;
use crate::db;
use crate::engine::EngineError;
use crate::github::{progress_comment, GitHubApp, Review, REQUESTED_EVENT, STREAM_PREFIX};

/// The event that ends a run.
pub const DECIDED_EVENT: &str = "GitHubDeploymentProtectionDecided";

#[derive(Clone, Debug)]
pub struct ReporterOptions {
    pub instance_id: String,
    pub lease_ttl: Duration,
    pub poll_interval: Duration,
    pub batch_size: usize,
    /// Progress comments per run (GitHub keeps at most 10 status reports per deployment).
    pub max_comments: u32,
}

impl Default for ReporterOptions {
    fn default() -> Self {
        Self {
            instance_id: format!("rollgate-{}", Uuid::new_v4().simple()),
            lease_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_secs(1),
            batch_size: 500,
            max_comments: 8,
        }
    }
}

pub struct GitHubReporter {
    store: Arc<dyn EventStore>,
    app: Arc<GitHubApp>,
    options: ReporterOptions,
}

pub struct ReporterHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ReporterHandle {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What one rollout event means for a waiting run.
fn review_for(
    event: &RecordedEvent,
    state: &RolloutState,
    environment: &str,
    comments_left: bool,
) -> Option<Review> {
    let rollout = state.rollout()?;
    let decided = |s: &str, c: String| Some(Review::new(environment, Some(s), &c));
    let by = |key: &str| {
        event
            .payload
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("someone")
            .to_owned()
    };
    match event.event_type.as_str() {
        "AdvanceRequested" | "AdvanceApproved" => {
            let request = rollout.open_request()?;
            if request.status != RequestStatus::Open {
                return None;
            }
            let stage = rollout.plan.stage(request.to_stage)?;
            let approvers: Vec<String> = request
                .approvals
                .iter()
                .map(|a| a.approver.to_string())
                .collect();
            let roles: Vec<_> = request.approvals.iter().map(|a| a.roles.clone()).collect();
            let assignment = assign(&stage.approvals, &roles);
            if assignment.is_satisfied() {
                return decided(
                    "approved",
                    format!(
                        "quorum met for stage {} ({}): {}",
                        stage.name,
                        request.to_stage,
                        approvers.join(", ")
                    ),
                );
            }
            if !comments_left {
                return None;
            }
            let needed: u32 = stage.approvals.iter().map(|r| r.count).sum();
            let waiting: Vec<String> = stage
                .approvals
                .iter()
                .zip(&assignment.missing)
                .filter(|(_, m)| **m > 0)
                .map(|(r, m)| {
                    let roles: Vec<&str> = r.roles.iter().map(|r| r.as_str()).collect();
                    format!("{m} {}", roles.join(" or "))
                })
                .collect();
            Some(Review::new(
                environment,
                None,
                &progress_comment(&approvers, needed, &waiting),
            ))
        }
        "Advanced" => decided(
            "approved",
            format!(
                "advanced to stage {}",
                rollout
                    .current_stage()
                    .map_or_else(|| "?".to_owned(), |s| s.name.clone())
            ),
        ),
        "AdvanceRejected" => decided(
            "rejected",
            format!(
                "advance rejected by {}: {}",
                by("rejected_by"),
                by("comment")
            ),
        ),
        "RolledBack" => decided("rejected", format!("rolled back: {}", by("reason"))),
        "RolloutAborted" => decided("rejected", format!("rollout aborted: {}", by("reason"))),
        _ => None,
    }
}

impl GitHubReporter {
    pub fn new(store: Arc<dyn EventStore>, app: Arc<GitHubApp>, options: ReporterOptions) -> Self {
        Self {
            store,
            app,
            options,
        }
    }

    pub fn spawn(self) -> ReporterHandle {
        let (stop, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut wake = self.store.subscribe();
            let cache = RolloutCache::default();
            let mut done: HashSet<String> = HashSet::new();
            loop {
                if *stop_rx.borrow() {
                    return;
                }
                if let Err(e) = self.round(&cache, &mut done).await {
                    tracing::warn!(error = %e, "GitHub reporting round failed; retrying");
                }
                tokio::select! {
                    r = wake.changed() => { if r.is_err() { tokio::time::sleep(self.options.poll_interval).await; } }
                    _ = tokio::time::sleep(self.options.poll_interval) => {}
                    _ = stop_rx.changed() => return,
                }
            }
        });
        ReporterHandle { stop, task }
    }

    /// Makes every open run as current as it can be.
    pub async fn round(
        &self,
        cache: &RolloutCache,
        done: &mut HashSet<String>,
    ) -> Result<(), EngineError> {
        let pool = self.store.pool();
        for target in db::targets(&pool, STREAM_PREFIX).await? {
            if done.contains(&target) {
                continue;
            }
            match self.run(cache, &target).await {
                Ok(true) => {
                    done.insert(target);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(run = %target, error = %e, "GitHub report failed"),
            }
        }
        Ok(())
    }

    /// Reports one run; true when it is decided.
    async fn run(&self, cache: &RolloutCache, target: &str) -> Result<bool, EngineError> {
        let own = read_whole_stream(self.store.as_ref(), target).await?;
        if own.iter().any(|e| e.event_type == DECIDED_EVENT) {
            return Ok(true);
        }
        let Some(request) = own.iter().find(|e| e.event_type == REQUESTED_EVENT) else {
            return Ok(false);
        };
        let pool = self.store.pool();
        let owner = &self.options.instance_id;
        if !db::acquire_lease(
            &pool,
            target,
            owner,
            self.options.lease_ttl.as_millis() as i64,
        )
        .await?
        {
            return Ok(false);
        }
        let p = &request.payload;
        let environment = p["environment"].as_str().unwrap_or_default().to_owned();
        let callback = p["deployment_callback_url"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let installation = p["installation_id"].as_u64().unwrap_or_default();
        let Some(rollout_id) = p["rollout_id"].as_str().map(str::to_owned) else {
            let review = Review::new(
                &environment,
                Some("rejected"),
                &format!(
                    "no rollgate rollout is bound to {} / {environment}",
                    p["repository"].as_str().unwrap_or("?")
                ),
            );
            self.post(installation, &callback, &review).await?;
            self.decide(target, own.len() as u64, &review, request.id)
                .await?;
            return Ok(true);
        };
        let rollout_stream = format!("rollout-{rollout_id}");
        let Some(start) = db::checkpoint(&pool, target).await? else {
            db::ensure_checkpoint(&pool, target, request.position).await?;
            return Ok(false);
        };
        let comments = own
            .iter()
            .filter(|e| e.event_type == "GitHubDeploymentProtectionCommented")
            .count() as u32;
        let events = self
            .store
            .read_all(start, self.options.batch_size.max(1))
            .await?;
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(false);
        };
        for e in events.iter().filter(|e| e.stream == rollout_stream) {
            let state = cache
                .state_at(self.store.as_ref(), &rollout_stream, e.version)
                .await?;
            if let Some(review) = review_for(
                e,
                &state,
                &environment,
                comments < self.options.max_comments,
            ) {
                self.post(installation, &callback, &review).await?;
                if review.state.is_some() {
                    self.decide(target, own.len() as u64, &review, e.id).await?;
                    db::advance(&pool, target, start, e.position, owner).await?;
                    return Ok(true);
                }
                self.comment(target, own.len() as u64, &review, e.id)
                    .await?;
                // The run's own stream grew: look again next round.
                db::advance(&pool, target, start, e.position, owner).await?;
                return Ok(false);
            }
        }
        db::advance(&pool, target, start, last, owner).await?;
        Ok(false)
    }

    async fn post(
        &self,
        installation: u64,
        callback: &str,
        review: &Review,
    ) -> Result<(), EngineError> {
        self.app
            .review(installation, callback, review)
            .await
            .map_err(|e| EngineError::Client(e.to_string()))
    }

    async fn record(
        &self,
        target: &str,
        version: u64,
        event_type: &str,
        review: &Review,
        causation: Uuid,
    ) -> Result<(), EngineError> {
        let data = EventData {
            id: Uuid::new_v4(),
            event_type: event_type.to_owned(),
            schema_version: 1,
            payload: json!({ "review": review }),
            metadata: json!({
                "actor": { "id": crate::engine::ENGINE_ACTOR, "roles": ["service"] },
                "team": null,
                "request_id": Uuid::new_v4().to_string(),
                "correlation_id": causation.to_string(),
                "causation_id": causation.to_string(),
                "policy_version": null,
            }),
        };
        self.store
            .append(target, ExpectedVersion::Exact(version), vec![data])
            .await?;
        Ok(())
    }

    async fn decide(
        &self,
        target: &str,
        version: u64,
        review: &Review,
        causation: Uuid,
    ) -> Result<(), EngineError> {
        self.record(target, version, DECIDED_EVENT, review, causation)
            .await
    }

    async fn comment(
        &self,
        target: &str,
        version: u64,
        review: &Review,
        causation: Uuid,
    ) -> Result<(), EngineError> {
        self.record(
            target,
            version,
            "GitHubDeploymentProtectionCommented",
            review,
            causation,
        )
        .await
    }
}
