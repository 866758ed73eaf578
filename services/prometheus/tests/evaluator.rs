//! The evaluator loop with a real Prometheus and the lease on a real PostgreSQL.
//!
//! The rollout side ([`RolloutPort`]) is the server's command path in production; here it is a
//! small in-memory recorder that keeps the stage's last recorded interval and refuses an
//! interval that is not newer, as the domain does. The clock is moved by hand, so every pass
//! is deterministic: no sleeping, no timing assertions.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use rollgate_domain::RolloutId;
use rollgate_prometheus::{
    ActiveStage, CriterionQueries, Evaluator, EvaluatorConfig, EvaluatorMetrics, Leases, Measured,
    PortError, Prometheus, PrometheusConfig, QueryCriterion, Recorded, RolloutPort,
    StageEvaluation,
};
use rollgate_store::{BackendKind, Clock, ManualClock, StoreOptions};
use rollgate_testkit::TestDb;
use support::{eventually, Exporter, PrometheusProcess};

#[derive(Default)]
struct Shared {
    stage: Option<ActiveStage>,
    recorded: Vec<(String, StageEvaluation)>,
}

/// One instance's view of the shared rollout.
struct Port {
    instance: String,
    rollout: RolloutId,
    shared: Arc<Mutex<Shared>>,
}

#[async_trait]
impl RolloutPort for Port {
    async fn candidates(&self) -> Result<Vec<RolloutId>, PortError> {
        // Like a list of running rollouts read a moment ago: it may name one that stopped.
        Ok(vec![self.rollout])
    }

    async fn active_stage(&self, _id: &RolloutId) -> Result<Option<ActiveStage>, PortError> {
        Ok(self.shared.lock().unwrap().stage.clone())
    }

    async fn record(
        &self,
        _id: &RolloutId,
        evaluation: StageEvaluation,
    ) -> Result<Recorded, PortError> {
        let mut s = self.shared.lock().unwrap();
        let Some(stage) = s.stage.as_mut() else {
            return Ok(Recorded::NotActive);
        };
        if stage.last_interval >= Some(evaluation.interval_index) {
            return Ok(Recorded::AlreadyEvaluated);
        }
        stage.last_interval = Some(evaluation.interval_index);
        s.recorded.push((self.instance.clone(), evaluation));
        Ok(Recorded::Recorded)
    }
}

fn criterion() -> QueryCriterion {
    QueryCriterion {
        metric: "error_rate".into(),
        queries: CriterionQueries {
            query: r#"sum(requests_total{track="canary",stage="{{stage}}",code=~"5.."} or vector(0)) / sum(requests_total{track="canary",stage="{{stage}}"})"#.into(),
            samples_query: Some(r#"sum(requests_total{track="canary",stage="{{stage}}"})"#.into()),
            baseline_query: None,
            baseline_samples_query: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_interval_once_takeover_after_expiry_and_nothing_while_inactive() {
    let exporter = Exporter::start().await;
    exporter.add("canary", "beta", "200", 500);
    exporter.add("canary", "beta", "500", 5);
    let mut prom = PrometheusProcess::start(&[exporter.port]).await;
    let client = Prometheus::new(PrometheusConfig::new(&prom.url)).unwrap();
    eventually("the canary series", Duration::from_secs(20), || async {
        client
            .value(r#"sum(requests_total{track="canary"})"#, Utc::now())
            .await
            .ok()
            .filter(|s| s.value == 505.0)
    })
    .await;

    let db = TestDb::new(BackendKind::Postgres).await;
    let store = db.store(StoreOptions::default()).await;
    let entered_at = rollgate_store::clock::truncate_micros(Utc::now());
    let clock = Arc::new(ManualClock::new(entered_at));
    let rollout_id = RolloutId::new(uuid::Uuid::new_v4());
    let shared = Arc::new(Mutex::new(Shared {
        stage: Some(ActiveStage {
            rollout_id,
            feature_key: "checkout".into(),
            stage: 0,
            stage_name: "beta".into(),
            entered_at,
            interval: Duration::from_secs(5),
            criteria: vec![criterion()],
            last_interval: None,
        }),
        recorded: Vec::new(),
    }));
    let config = EvaluatorConfig {
        tick: Duration::from_secs(1),
        lease_ttl: Duration::from_secs(5),
    };
    let instance = |name: &str| {
        Evaluator::new(
            client.clone(),
            Arc::new(Port {
                instance: name.into(),
                rollout: rollout_id,
                shared: shared.clone(),
            }),
            Leases::new(store.pool(), name, config.lease_ttl),
            clock.clone() as Arc<dyn Clock>,
            EvaluatorMetrics::new(),
            config,
        )
    };
    let a = instance("a");
    let b = instance("b");
    let recorded = || {
        shared
            .lock()
            .unwrap()
            .recorded
            .iter()
            .map(|(who, e)| (who.clone(), e.interval_index))
            .collect::<Vec<_>>()
    };

    // Before the first interval: nothing is due.
    clock.advance(chrono::Duration::seconds(4));
    a.pass().await;
    b.pass().await;
    assert!(recorded().is_empty());

    // Interval 1, then interval 2 a little late: each once, by the lease holder, evaluated at
    // the scheduled instant.
    clock.advance(chrono::Duration::seconds(1));
    let ra = a.pass().await;
    let rb = b.pass().await;
    assert_eq!(rb.skipped_not_leased, 1, "b does not hold the lease");
    assert_eq!(ra.recorded, vec![(rollout_id, 1)]);
    clock.advance(chrono::Duration::milliseconds(7_300));
    a.pass().await;
    b.pass().await;
    a.pass().await;
    assert_eq!(recorded(), vec![("a".into(), 1), ("a".into(), 2)]);
    {
        let s = shared.lock().unwrap();
        let e = &s.recorded[1].1;
        assert_eq!(e.scheduled_at, entered_at + chrono::Duration::seconds(10));
        assert_eq!(e.results[0].measurement.evaluated_at, e.scheduled_at);
        let Measured::Observed { canary, baseline } = &e.results[0].measurement.measured else {
            panic!("expected values: {e:?}");
        };
        assert!((canary.value - 5.0 / 505.0).abs() < 1e-9, "{canary:?}");
        assert_eq!(canary.samples, Some(505));
        assert_eq!(*baseline, None);
        assert!(e.results[0]
            .measurement
            .queries
            .query
            .contains(r#"stage="beta""#));
    }

    // a dies (no more passes). Its lease runs until 12.3 + 5 s; at 15 s b cannot take it yet,
    // at 17.3 s it takes over and evaluates interval 3 — within two intervals.
    clock.set(entered_at + chrono::Duration::seconds(15));
    assert_eq!(b.pass().await.skipped_not_leased, 1);
    clock.set(entered_at + chrono::Duration::milliseconds(17_300));
    assert_eq!(b.pass().await.recorded, vec![(rollout_id, 3)]);
    assert_eq!(
        recorded(),
        vec![("a".into(), 1), ("a".into(), 2), ("b".into(), 3)]
    );

    // A restarted instance with the recorded state does not evaluate interval 3 again.
    let a2 = instance("a");
    clock.set(entered_at + chrono::Duration::seconds(19));
    b.pass().await;
    a2.pass().await;
    assert_eq!(recorded().len(), 3);

    // Prometheus down: the interval is still recorded, inconclusive with the reason.
    prom.stop();
    clock.set(entered_at + chrono::Duration::seconds(20));
    b.pass().await;
    {
        let s = shared.lock().unwrap();
        let (_, e) = s.recorded.last().unwrap();
        assert_eq!(e.interval_index, 4);
        match &e.results[0].measurement.measured {
            Measured::Inconclusive { code, reason, .. } => {
                assert_eq!(code, "unreachable");
                assert!(reason.contains("cannot reach Prometheus"), "{reason}");
            }
            other => panic!("expected inconclusive, got {other:?}"),
        }
    }

    // Not running any more (paused, rolled back, completed, aborted): no evaluation, and the
    // lease is given up.
    shared.lock().unwrap().stage = None;
    shared.lock().unwrap().recorded.clear();
    clock.set(entered_at + chrono::Duration::seconds(40));
    b.pass().await;
    assert!(recorded().is_empty());
    let leases = Leases::new(store.pool(), "probe", config.lease_ttl);
    assert_eq!(leases.holder(&rollout_id).await.unwrap(), None);
}
