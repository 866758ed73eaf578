//! The evaluator loop that runs inside `rollgate serve`.
//!
//! While a rollout's stage is running and has query criteria, the stage's evaluation
//! intervals are scheduled from the moment it was entered: interval `k` (k ≥ 1) is due at
//! `entered_at + k × interval` and its queries are evaluated at exactly that instant, so the
//! schedule never drifts and the recorded values can be recomputed. The index of the last
//! recorded interval is part of the stage's state (it travels in the recorded event), so a
//! restart resumes with the next due interval and never evaluates one twice; when the loop
//! falls behind it evaluates the latest due interval only and reports the lag.
//!
//! Exactly one instance evaluates a rollout: it must hold the rollout's lease
//! ([`crate::lease::Leases`]), renewed on every tick; another instance takes over when the
//! lease expires. The domain refuses an interval index that is not newer than the last one
//! recorded, which closes the window where two instances could both think they hold it.
//!
//! The loop reads and writes rollouts through [`RolloutPort`], which the server implements
//! with its command path (so a breach rolls back or pauses exactly as for posted readings).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use prometheus::{Gauge, IntCounter, IntCounterVec, Opts, Registry};
use rollgate_domain::RolloutId;
use rollgate_store::Clock;
use serde::{Deserialize, Serialize};

use crate::client::Prometheus;
use crate::lease::Leases;
use crate::measure::{measure, CriterionQueries, Measurement};
use crate::template::TemplateVars;

/// The queries of one metric of the active stage (every criterion of a stage that names the
/// metric is judged on this one measurement).
#[derive(Clone, Debug, PartialEq)]
pub struct QueryCriterion {
    pub metric: String,
    /// Templates as written in the plan.
    pub queries: CriterionQueries,
}

/// What the evaluator needs to know about a rollout whose stage is running with query
/// criteria.
#[derive(Clone, Debug, PartialEq)]
pub struct ActiveStage {
    pub rollout_id: RolloutId,
    pub feature_key: String,
    pub stage: u32,
    pub stage_name: String,
    pub entered_at: DateTime<Utc>,
    pub interval: Duration,
    pub criteria: Vec<QueryCriterion>,
    /// The last interval index recorded for this stage (stage entry resets it).
    pub last_interval: Option<u64>,
}

/// One metric's measurement in an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CriterionResult {
    pub metric: String,
    pub measurement: Measurement,
}

/// One interval's evaluation of a stage, to be recorded by the domain command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageEvaluation {
    pub stage: u32,
    pub interval_index: u64,
    /// `entered_at + interval_index × interval`: the instant the queries were evaluated at.
    pub scheduled_at: DateTime<Utc>,
    /// When the evaluator ran (later than `scheduled_at` by the lag).
    pub evaluated_at: DateTime<Utc>,
    pub results: Vec<CriterionResult>,
}

/// What recording answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    Recorded,
    /// The domain already holds this interval (or a later one) for the stage.
    AlreadyEvaluated,
    /// The rollout is no longer running at that stage.
    NotActive,
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct PortError(pub String);

/// The server's side: which rollouts to look at, their active stage, and the command path.
#[async_trait]
pub trait RolloutPort: Send + Sync + 'static {
    /// Rollouts that may be running a stage with query criteria.
    async fn candidates(&self) -> Result<Vec<RolloutId>, PortError>;
    /// The rollout's running stage with query criteria, or `None` (not running: draft,
    /// paused, rolled back, completed, aborted; or no query criteria).
    async fn active_stage(&self, id: &RolloutId) -> Result<Option<ActiveStage>, PortError>;
    /// Records the evaluation through the domain's system command.
    async fn record(
        &self,
        id: &RolloutId,
        evaluation: StageEvaluation,
    ) -> Result<Recorded, PortError>;
}

/// Rollouts whose summary says `running`, from the read model (a moment behind the log; the
/// evaluator checks each one's state before evaluating). For [`RolloutPort::candidates`].
pub async fn running_rollouts(
    pool: &rollgate_store::DatabasePool,
) -> Result<Vec<RolloutId>, PortError> {
    let mut filter = rollgate_projections::RolloutFilter::new(rollgate_domain::TeamScope::All);
    filter.status = Some("running".into());
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    // Bounded: at most 100 pages of the largest page size.
    for _ in 0..100 {
        let page = rollgate_projections::list_rollouts(
            pool,
            &filter,
            cursor.as_deref(),
            rollgate_projections::MAX_LIMIT,
        )
        .await
        .map_err(|e| PortError(format!("cannot list running rollouts: {e}")))?;
        for item in &page.items {
            match item.id.parse::<uuid::Uuid>() {
                Ok(u) => ids.push(RolloutId::new(u)),
                Err(_) => tracing::warn!(id = %item.id, "rollout summary with a malformed id"),
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok(ids)
}

/// The latest interval due at `now` for a stage entered at `entered_at`: `(k, scheduled_at)`
/// with k ≥ 1 and `scheduled_at = entered_at + k × interval ≤ now`.
pub fn due_interval(
    entered_at: DateTime<Utc>,
    interval: Duration,
    now: DateTime<Utc>,
) -> Option<(u64, DateTime<Utc>)> {
    let step = i64::try_from(interval.as_millis())
        .ok()
        .filter(|s| *s > 0)?;
    let elapsed = (now - entered_at).num_milliseconds();
    if elapsed < step {
        return None;
    }
    let k = elapsed / step;
    let scheduled = entered_at + chrono::Duration::milliseconds(k.checked_mul(step)?);
    Some((u64::try_from(k).ok()?, scheduled))
}

/// The next interval to evaluate, if one is due and not yet recorded.
pub fn next_due(stage: &ActiveStage, now: DateTime<Utc>) -> Option<(u64, DateTime<Utc>)> {
    let (k, at) = due_interval(stage.entered_at, stage.interval, now)?;
    match stage.last_interval {
        Some(done) if done >= k => None,
        _ => Some((k, at)),
    }
}

/// The evaluator's own health, exposed on `/metrics`.
#[derive(Clone)]
pub struct EvaluatorMetrics {
    pub evaluations: IntCounterVec,
    pub query_errors: IntCounterVec,
    pub errors: IntCounter,
    pub lag_seconds: Gauge,
}

impl EvaluatorMetrics {
    pub fn new() -> Self {
        EvaluatorMetrics {
            evaluations: IntCounterVec::new(
                Opts::new(
                    "evaluator_evaluations_total",
                    "Prometheus guardrail evaluations by outcome (recorded, already_evaluated, not_active)",
                ),
                &["outcome"],
            )
            .expect("metric"),
            query_errors: IntCounterVec::new(
                Opts::new(
                    "evaluator_inconclusive_total",
                    "Criterion measurements that were inconclusive, by reason code",
                ),
                &["code"],
            )
            .expect("metric"),
            errors: IntCounter::new(
                "evaluator_errors_total",
                "Evaluator passes that failed on the database or the command path",
            )
            .expect("metric"),
            lag_seconds: Gauge::new(
                "evaluator_lag_seconds",
                "How far behind its schedule the latest evaluation ran, in seconds",
            )
            .expect("metric"),
        }
    }

    /// Adds the metrics to `registry` (the server's `/metrics`).
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.evaluations.clone()))?;
        registry.register(Box::new(self.query_errors.clone()))?;
        registry.register(Box::new(self.errors.clone()))?;
        registry.register(Box::new(self.lag_seconds.clone()))?;
        Ok(())
    }
}

impl Default for EvaluatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// How often the loop looks, and how long a lease lasts without renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvaluatorConfig {
    pub tick: Duration,
    pub lease_ttl: Duration,
}

impl Default for EvaluatorConfig {
    fn default() -> Self {
        EvaluatorConfig {
            tick: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(5),
        }
    }
}

/// What one pass did (for tests and logs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub recorded: Vec<(RolloutId, u64)>,
    pub skipped_not_leased: usize,
    pub errors: usize,
}

pub struct Evaluator {
    client: Prometheus,
    port: Arc<dyn RolloutPort>,
    leases: Leases,
    clock: Arc<dyn Clock>,
    metrics: EvaluatorMetrics,
    config: EvaluatorConfig,
}

impl Evaluator {
    pub fn new(
        client: Prometheus,
        port: Arc<dyn RolloutPort>,
        leases: Leases,
        clock: Arc<dyn Clock>,
        metrics: EvaluatorMetrics,
        config: EvaluatorConfig,
    ) -> Self {
        Evaluator {
            client,
            port,
            leases,
            clock,
            metrics,
            config,
        }
    }

    /// Runs the loop on the current tokio runtime; the handle stops it.
    pub fn spawn(self) -> EvaluatorHandle {
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let instance = self.leases.owner().to_owned();
        let task = tokio::spawn(self.run(shutdown));
        EvaluatorHandle {
            instance,
            stop,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Runs passes every `tick` until `shutdown` turns true (or its sender is dropped).
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
            let report = self.pass().await;
            if !report.recorded.is_empty() {
                tracing::debug!(recorded = report.recorded.len(), "evaluator pass");
            }
        }
    }

    /// One pass over every candidate rollout.
    pub async fn pass(&self) -> PassReport {
        let mut report = PassReport::default();
        let ids = match self.port.candidates().await {
            Ok(ids) => ids,
            Err(e) => {
                self.metrics.errors.inc();
                tracing::warn!(error = %e, "evaluator cannot list rollouts");
                report.errors += 1;
                return report;
            }
        };
        for id in ids {
            match self.rollout(&id).await {
                Ok(Step::Recorded(k)) => report.recorded.push((id, k)),
                Ok(Step::NotLeased) => report.skipped_not_leased += 1,
                Ok(Step::Idle) => {}
                Err(e) => {
                    self.metrics.errors.inc();
                    tracing::warn!(rollout = %id, error = %e, "evaluator pass failed");
                    report.errors += 1;
                }
            }
        }
        report
    }

    async fn rollout(&self, id: &RolloutId) -> Result<Step, PortError> {
        let db = |e: sqlx::Error| PortError(format!("lease: {e}"));
        let Some(stage) = self.port.active_stage(id).await? else {
            self.leases.release(id).await.map_err(db)?;
            return Ok(Step::Idle);
        };
        if !self
            .leases
            .acquire(id, self.clock.now())
            .await
            .map_err(db)?
        {
            return Ok(Step::NotLeased);
        }
        let now = self.clock.now();
        let Some((k, scheduled_at)) = next_due(&stage, now) else {
            return Ok(Step::Idle);
        };
        let lag = (now - scheduled_at).num_milliseconds().max(0) as f64 / 1000.0;
        self.metrics.lag_seconds.set(lag);
        let vars = TemplateVars {
            stage: &stage.stage_name,
            feature_key: &stage.feature_key,
        };
        let mut results = Vec::with_capacity(stage.criteria.len());
        for c in &stage.criteria {
            let measurement = match c.queries.render(&vars) {
                Ok(rendered) => measure(&self.client, &rendered, scheduled_at).await,
                // Refused at plan creation; kept inconclusive (never a pass) if it happens.
                Err(e) => Measurement {
                    queries: c.queries.clone(),
                    evaluated_at: scheduled_at,
                    measured: crate::measure::Measured::Inconclusive {
                        field: "query".into(),
                        code: "template".into(),
                        reason: e.to_string(),
                    },
                },
            };
            if let crate::measure::Measured::Inconclusive { code, .. } = &measurement.measured {
                self.metrics.query_errors.with_label_values(&[code]).inc();
            }
            results.push(CriterionResult {
                metric: c.metric.clone(),
                measurement,
            });
        }
        let evaluation = StageEvaluation {
            stage: stage.stage,
            interval_index: k,
            scheduled_at,
            evaluated_at: self.clock.now(),
            results,
        };
        let outcome = self.port.record(id, evaluation).await?;
        let label = match outcome {
            Recorded::Recorded => "recorded",
            Recorded::AlreadyEvaluated => "already_evaluated",
            Recorded::NotActive => "not_active",
        };
        self.metrics.evaluations.with_label_values(&[label]).inc();
        Ok(match outcome {
            Recorded::Recorded => Step::Recorded(k),
            _ => Step::Idle,
        })
    }
}

/// A running evaluator loop. Stopping it (or dropping the handle) ends the loop after its
/// current pass; leases it holds then expire and another instance takes over.
pub struct EvaluatorHandle {
    instance: String,
    stop: tokio::sync::watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl EvaluatorHandle {
    /// This instance's owner id in the lease table.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Asks the loop to stop and aborts it where it waits (it holds no state of its own: the
    /// log and the lease table are the state).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        if let Ok(mut task) = self.task.lock() {
            if let Some(t) = task.take() {
                t.abort();
            }
        }
    }
}

impl Drop for EvaluatorHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Step {
    Recorded(u64),
    NotLeased,
    Idle,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn intervals_are_scheduled_from_stage_entry() {
        let every = Duration::from_secs(5);
        assert_eq!(due_interval(t(0), every, t(4)), None);
        assert_eq!(due_interval(t(0), every, t(5)), Some((1, t(5))));
        assert_eq!(due_interval(t(0), every, t(9)), Some((1, t(5))));
        // late by 2.5 s: still the slot at 10 s, not "now"
        assert_eq!(
            due_interval(t(0), every, t(12) + chrono::Duration::milliseconds(500)),
            Some((2, t(10)))
        );
        assert_eq!(due_interval(t(0), Duration::ZERO, t(100)), None);
        assert_eq!(due_interval(t(10), every, t(0)), None);
    }

    #[test]
    fn a_recorded_interval_is_not_evaluated_again() {
        let mut stage = ActiveStage {
            rollout_id: RolloutId::new(uuid::Uuid::from_u128(1)),
            feature_key: "k".into(),
            stage: 0,
            stage_name: "beta".into(),
            entered_at: t(0),
            interval: Duration::from_secs(5),
            criteria: vec![],
            last_interval: Some(2),
        };
        assert_eq!(next_due(&stage, t(14)), None);
        assert_eq!(next_due(&stage, t(15)), Some((3, t(15))));
        // a restart long after: only the latest slot, not the missed ones
        assert_eq!(next_due(&stage, t(61)), Some((12, t(60))));
        stage.last_interval = None;
        assert_eq!(next_due(&stage, t(5)), Some((1, t(5))));
    }
}
