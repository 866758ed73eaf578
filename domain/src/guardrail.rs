//! Guardrail evaluation: a criterion against the latest reading of its metric.
//!
//! A success criterion passes when its comparator holds. A rollback criterion
//! describes the bad condition (`error_rate gt 0.02`): it is breached when its
//! comparator holds. Too few samples (or no reading) is inconclusive.
//!
//! "Latest" means latest *recorded by rollgate* (the decision's clock, stored
//! as the event's `at`), never the `observed_at` a client claims: a reading
//! dated in the future cannot hide the readings recorded after it. Within one
//! batch the later reading wins. What a stage keeps of its readings is bounded
//! ([`StageReadings`]): the latest reading per metric its criteria name, plus
//! counts.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::plan::{Criterion, Relation, Stage};
use crate::values::{Comparator, MetricName, Threshold};

/// How far a reading's `observed_at` may be off rollgate's clock (skew between
/// the caller's clock and rollgate's, and times truncated to whole seconds):
/// more than this ahead of `now`, or more than this before the current stage
/// was entered, is refused.
pub const CLOCK_LEEWAY_SECONDS: i64 = 60;

/// One metric observation pushed by automation or a person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    pub metric: MetricName,
    pub value: f64,
    pub samples: u64,
    pub observed_at: DateTime<Utc>,
}

impl Reading {
    /// A reading with a finite value.
    pub fn parse(
        metric: MetricName,
        value: f64,
        samples: u64,
        observed_at: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        if !value.is_finite() {
            return Err(ValidationError::new("value", "must be a finite number"));
        }
        Ok(Self {
            metric,
            value,
            samples,
            observed_at,
        })
    }
}

/// Where a batch of readings came from. Only rollgate's own evaluator records
/// `prometheus` (through `RecordEvaluation`, for the system actor); whatever an
/// API caller posts is `posted`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadingSource {
    #[default]
    Posted,
    Prometheus,
}

/// One evaluation of a query criterion's queries by rollgate's evaluator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryEvaluation {
    pub metric: MetricName,
    /// The query as run (templates expanded).
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_query: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_query: Option<String>,
    /// The evaluation timestamp sent to Prometheus.
    pub evaluated_at: DateTime<Utc>,
    /// The canary's value (absent when the query failed or returned nothing).
    pub value: Option<f64>,
    pub samples: Option<u64>,
    pub baseline_value: Option<f64>,
    pub baseline_samples: Option<u64>,
    /// Why the evaluation is inconclusive (query error, timeout, no series,
    /// too few samples); `None` when it is conclusive.
    pub inconclusive: Option<String>,
}

/// What a stage keeps of one metric's query evaluations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricEvaluations {
    pub latest: QueryEvaluation,
    pub recorded_at: DateTime<Utc>,
    pub count: u64,
    /// Inconclusive evaluations since the last conclusive one (or resume).
    pub consecutive_inconclusive: u32,
}

/// Which way a criterion is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriterionKind {
    /// Pass when the comparator holds.
    Success,
    /// Fail (= breached) when the comparator holds.
    Rollback,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// For a rollback criterion: breached.
    Fail,
    /// No reading, or fewer samples than the criterion's `min_samples`.
    Inconclusive,
}

/// A verdict with the facts it was reached on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub kind: CriterionKind,
    pub metric: MetricName,
    pub comparator: Comparator,
    pub threshold: Threshold,
    pub min_samples: u64,
    /// The latest reading's value, if there was one.
    pub value: Option<f64>,
    pub samples: u64,
    pub verdict: Verdict,
    /// For a baseline criterion: the relation judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relation: Option<Relation>,
    /// For a baseline criterion: the baseline's value and samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline_samples: Option<u64>,
    /// Why the verdict is inconclusive, when rollgate's evaluator said why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Evaluation {
    /// A rollback criterion whose bad condition holds.
    pub fn is_breach(&self) -> bool {
        self.kind == CriterionKind::Rollback && self.verdict == Verdict::Fail
    }

    /// `error_rate gt 0.02: value 0.05 over 1000 samples`
    pub fn describe(&self) -> String {
        let mut facts = match self.value {
            Some(v) => format!("value {v} over {} samples", self.samples),
            None => "no reading".to_owned(),
        };
        let relation = match self.relation {
            Some(rel) => {
                match self.baseline_value {
                    Some(b) => facts.push_str(&format!(", baseline {b}")),
                    None => facts.push_str(", no baseline"),
                }
                if let Some(n) = self.baseline_samples {
                    facts.push_str(&format!(" over {n} samples"));
                }
                format!(" {} to baseline", rel.as_str())
            }
            None => String::new(),
        };
        if let Some(why) = &self.reason {
            facts.push_str(&format!(", inconclusive: {why}"));
        }
        format!(
            "{}{relation} {} {}: {facts} (min {} samples)",
            self.metric, self.comparator, self.threshold, self.min_samples
        )
    }
}

/// A reading as rollgate recorded it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedReading {
    pub reading: Reading,
    /// When rollgate recorded it (the recording event's `at`): this orders readings.
    pub recorded_at: DateTime<Utc>,
}

/// What a stage keeps of one metric's readings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricReadings {
    /// The latest recorded reading.
    pub latest: RecordedReading,
    /// Readings of this metric recorded at this stage.
    pub count: u64,
    /// Their samples, summed (saturating).
    pub total_samples: u64,
}

/// What the guardrails keep of the current stage's readings: per metric named
/// by the stage's criteria, the latest recorded reading and counts. Readings of
/// other metrics are only counted. Bounded by the plan, not by traffic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageReadings {
    metrics: BTreeMap<MetricName, MetricReadings>,
    /// Readings recorded at this stage, of every metric.
    recorded: u64,
    /// Per query-fed metric, rollgate's own evaluations.
    #[serde(default)]
    evaluations: BTreeMap<MetricName, MetricEvaluations>,
}

impl StageReadings {
    /// Folds in a batch recorded at `recorded_at`, in order (a later reading of
    /// the same metric replaces an earlier one, whatever their `observed_at`).
    /// Only metrics for which `keep` holds are kept.
    pub fn record<'a>(
        &mut self,
        readings: impl IntoIterator<Item = &'a Reading>,
        recorded_at: DateTime<Utc>,
        keep: impl Fn(&MetricName) -> bool,
    ) {
        for reading in readings {
            self.recorded = self.recorded.saturating_add(1);
            if !keep(&reading.metric) {
                continue;
            }
            let latest = RecordedReading {
                reading: reading.clone(),
                recorded_at,
            };
            match self.metrics.get_mut(&reading.metric) {
                Some(m) => {
                    m.latest = latest;
                    m.count = m.count.saturating_add(1);
                    m.total_samples = m.total_samples.saturating_add(reading.samples);
                }
                None => {
                    self.metrics.insert(
                        reading.metric.clone(),
                        MetricReadings {
                            latest,
                            count: 1,
                            total_samples: reading.samples,
                        },
                    );
                }
            }
        }
    }

    /// Folds in evaluations recorded at `recorded_at` by rollgate's
    /// evaluator, counting consecutive inconclusive ones per metric (an
    /// evaluation is inconclusive when a criterion of `stage` on its metric
    /// judges it so). Metrics `stage` does not query are not kept.
    pub fn record_evaluations<'a>(
        &mut self,
        evaluations: impl IntoIterator<Item = &'a QueryEvaluation>,
        recorded_at: DateTime<Utc>,
        stage: &Stage,
    ) {
        for e in evaluations {
            if stage.queries_for(&e.metric).is_none() {
                continue;
            }
            let inconclusive =
                stage
                    .criteria()
                    .filter(|(_, c)| c.metric == e.metric)
                    .any(|(kind, c)| {
                        judge(c, kind, Observation::of_evaluation(e)).verdict
                            == Verdict::Inconclusive
                    });
            let entry = self.evaluations.entry(e.metric.clone());
            let previous = match &entry {
                std::collections::btree_map::Entry::Occupied(o) => {
                    (o.get().count, o.get().consecutive_inconclusive)
                }
                std::collections::btree_map::Entry::Vacant(_) => (0, 0),
            };
            let kept = MetricEvaluations {
                latest: e.clone(),
                recorded_at,
                count: previous.0.saturating_add(1),
                consecutive_inconclusive: if inconclusive {
                    previous.1.saturating_add(1)
                } else {
                    0
                },
            };
            match entry {
                std::collections::btree_map::Entry::Occupied(mut o) => {
                    o.insert(kept);
                }
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(kept);
                }
            }
        }
    }

    /// What is kept of `metric`'s query evaluations.
    pub fn evaluation(&self, metric: &MetricName) -> Option<&MetricEvaluations> {
        self.evaluations.get(metric)
    }

    /// Every query-fed metric's evaluations.
    pub fn evaluations(&self) -> &BTreeMap<MetricName, MetricEvaluations> {
        &self.evaluations
    }

    /// Starts the consecutive-inconclusive counts over (on resume).
    pub fn reset_inconclusive(&mut self) {
        for e in self.evaluations.values_mut() {
            e.consecutive_inconclusive = 0;
        }
    }

    /// Drops the metrics for which `keep` does not hold (after a plan revision).
    pub fn retain(&mut self, keep: impl Fn(&MetricName) -> bool) {
        self.metrics.retain(|m, _| keep(m));
        self.evaluations.retain(|m, _| keep(m));
    }

    /// The latest recorded reading of `metric`.
    pub fn latest(&self, metric: &MetricName) -> Option<&Reading> {
        self.metrics.get(metric).map(|m| &m.latest.reading)
    }

    /// What is kept of `metric`.
    pub fn metric(&self, metric: &MetricName) -> Option<&MetricReadings> {
        self.metrics.get(metric)
    }

    /// The kept metrics.
    pub fn metrics(&self) -> &BTreeMap<MetricName, MetricReadings> {
        &self.metrics
    }

    /// Readings recorded at this stage, of every metric.
    pub fn len(&self) -> usize {
        usize::try_from(self.recorded).unwrap_or(usize::MAX)
    }

    pub fn is_empty(&self) -> bool {
        self.recorded == 0
    }
}

/// The facts one verdict is reached on.
#[derive(Clone, Debug, Default, PartialEq)]
struct Observation {
    value: Option<f64>,
    samples: u64,
    baseline_value: Option<f64>,
    baseline_samples: Option<u64>,
    reason: Option<String>,
}

impl Observation {
    fn of_reading(r: Option<&Reading>) -> Self {
        r.map_or_else(Self::default, |r| Self {
            value: Some(r.value),
            samples: r.samples,
            ..Self::default()
        })
    }

    fn of_evaluation(e: &QueryEvaluation) -> Self {
        Self {
            value: e.value,
            // without a samples query, the value stands for itself
            samples: e
                .samples
                .unwrap_or(if e.value.is_some() { u64::MAX } else { 0 }),
            baseline_value: e.baseline_value,
            baseline_samples: e.baseline_samples,
            reason: e.inconclusive.clone(),
        }
    }
}

/// Judges `criterion`: a query criterion on rollgate's latest evaluation of
/// its metric, any other on the latest recorded (posted) reading. A baseline
/// criterion judges the relation of the value to the baseline's (its
/// baseline query's value, else the plan's `baseline_metrics` figure kept in
/// the criterion), with `min_samples` applied to both sides.
pub fn evaluate(
    criterion: &Criterion,
    kind: CriterionKind,
    readings: &StageReadings,
) -> Evaluation {
    let observation = if criterion.queries.is_some() {
        readings
            .evaluation(&criterion.metric)
            .map_or_else(Observation::default, |e| {
                Observation::of_evaluation(&e.latest)
            })
    } else {
        Observation::of_reading(readings.latest(&criterion.metric))
    };
    judge(criterion, kind, observation)
}

fn judge(criterion: &Criterion, kind: CriterionKind, o: Observation) -> Evaluation {
    let baseline_value = match criterion.baseline {
        None => None,
        Some(_) => o.baseline_value.or(criterion.baseline_reference),
    };
    let judged = match (o.value, criterion.baseline) {
        (None, _) => None,
        (Some(v), None) => Some(v),
        (Some(v), Some(Relation::Difference)) => baseline_value.map(|b| v - b),
        (Some(v), Some(Relation::Ratio)) => baseline_value.filter(|b| *b > 0.0).map(|b| v / b),
    };
    let too_few = o.samples < criterion.min_samples
        || o.baseline_samples
            .is_some_and(|n| n < criterion.min_samples);
    let verdict = match judged {
        _ if o.reason.is_some() || too_few => Verdict::Inconclusive,
        Some(x) if x.is_finite() => {
            let holds = criterion.comparator.holds(x, criterion.threshold);
            match (kind, holds) {
                (CriterionKind::Success, true) | (CriterionKind::Rollback, false) => Verdict::Pass,
                (CriterionKind::Success, false) | (CriterionKind::Rollback, true) => Verdict::Fail,
            }
        }
        _ => Verdict::Inconclusive,
    };
    let reason = o
        .reason
        .or_else(|| match (verdict, criterion.baseline, o.value) {
            (Verdict::Inconclusive, Some(Relation::Ratio), Some(_))
                if !too_few && baseline_value.is_some_and(|b| b <= 0.0) =>
            {
                Some("the baseline is 0: no ratio".to_owned())
            }
            _ => None,
        });
    Evaluation {
        kind,
        metric: criterion.metric.clone(),
        comparator: criterion.comparator,
        threshold: criterion.threshold,
        min_samples: criterion.min_samples,
        value: o.value,
        samples: if o.value.is_some() && o.samples == u64::MAX {
            0
        } else {
            o.samples
        },
        verdict,
        relation: criterion.baseline,
        baseline_value,
        baseline_samples: o.baseline_samples,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn crit(c: Comparator, t: f64, min: u64) -> Criterion {
        Criterion {
            metric: MetricName::parse("error_rate").unwrap(),
            comparator: c,
            threshold: Threshold::parse(t).unwrap(),
            min_samples: min,
            queries: None,
            baseline: None,
            baseline_reference: None,
        }
    }

    fn time(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    fn reading(v: f64, n: u64, secs: i64) -> Reading {
        Reading {
            metric: MetricName::parse("error_rate").unwrap(),
            value: v,
            samples: n,
            observed_at: time(secs),
        }
    }

    fn kept(readings: &[Reading]) -> StageReadings {
        let mut s = StageReadings::default();
        s.record(readings, time(0), |_| true);
        s
    }

    #[test]
    fn a_reading_parses_only_with_a_finite_value() {
        let m = MetricName::parse("error_rate").unwrap();
        let r = Reading::parse(m.clone(), 0.5, 10, time(0)).unwrap();
        assert_eq!((r.value, r.samples, r.observed_at), (0.5, 10, time(0)));
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let e = Reading::parse(m.clone(), bad, 10, time(0)).unwrap_err();
            assert_eq!(e.field, "value");
        }
    }

    #[test]
    fn success_and_rollback_semantics() {
        let ok = crit(Comparator::Lte, 0.005, 500);
        let bad = crit(Comparator::Gt, 0.02, 200);
        let good = kept(&[reading(0.004, 1000, 0)]);
        let awful = kept(&[reading(0.05, 1000, 0)]);
        assert_eq!(
            evaluate(&ok, CriterionKind::Success, &good).verdict,
            Verdict::Pass
        );
        assert_eq!(
            evaluate(&ok, CriterionKind::Success, &awful).verdict,
            Verdict::Fail
        );
        assert_eq!(
            evaluate(&bad, CriterionKind::Rollback, &good).verdict,
            Verdict::Pass
        );
        let e = evaluate(&bad, CriterionKind::Rollback, &awful);
        assert!(e.is_breach());
        assert_eq!(e.value, Some(0.05));
        assert_eq!(e.samples, 1000);
    }

    #[test]
    fn too_few_samples_or_none_is_inconclusive() {
        let ok = crit(Comparator::Lte, 0.005, 500);
        assert_eq!(
            evaluate(
                &ok,
                CriterionKind::Success,
                &kept(&[reading(0.001, 499, 0)])
            )
            .verdict,
            Verdict::Inconclusive
        );
        // exactly min_samples is enough
        assert_eq!(
            evaluate(
                &ok,
                CriterionKind::Success,
                &kept(&[reading(0.001, 500, 0)])
            )
            .verdict,
            Verdict::Pass
        );
        let none = evaluate(&ok, CriterionKind::Success, &StageReadings::default());
        assert_eq!(none.verdict, Verdict::Inconclusive);
        assert_eq!(none.value, None);
        assert_eq!(none.samples, 0);
    }

    #[test]
    fn the_later_recorded_reading_wins_whatever_its_observation_time() {
        let ok = crit(Comparator::Lte, 0.005, 0);
        // a reading dated far ahead, then a bad one recorded later
        let mut s = StageReadings::default();
        s.record(&[reading(0.001, 10, 10_000_000)], time(0), |_| true);
        s.record(&[reading(0.9, 10, 5)], time(10), |_| true);
        assert_eq!(
            evaluate(&ok, CriterionKind::Success, &s).verdict,
            Verdict::Fail
        );
        // within one batch the later one wins, also at equal observation times
        let batch = kept(&[reading(0.001, 10, 60), reading(0.9, 10, 60)]);
        assert_eq!(batch.latest(&ok.metric).unwrap().value, 0.9);
        let batch = kept(&[reading(0.9, 10, 60), reading(0.001, 10, 0)]);
        assert_eq!(batch.latest(&ok.metric).unwrap().value, 0.001);
    }

    #[test]
    fn stage_readings_stay_bounded_and_count() {
        let mut s = StageReadings::default();
        let other = Reading {
            metric: MetricName::parse("latency_ms").unwrap(),
            ..reading(300.0, 10, 0)
        };
        for i in 0..1000 {
            s.record(&[reading(0.001, 10, i), other.clone()], time(i), |m| {
                m.as_str() == "error_rate"
            });
        }
        assert_eq!(s.len(), 2000);
        assert!(!s.is_empty());
        assert_eq!(s.metrics().len(), 1);
        let m = s.metric(&MetricName::parse("error_rate").unwrap()).unwrap();
        assert_eq!(m.count, 1000);
        assert_eq!(m.total_samples, 10_000);
        assert_eq!(m.latest.recorded_at, time(999));
        assert!(StageReadings::default().is_empty());
        s.retain(|_| false);
        assert!(s.metrics().is_empty());
    }
}
