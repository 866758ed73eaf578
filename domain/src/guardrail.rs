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
use crate::plan::Criterion;
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
}

impl Evaluation {
    /// A rollback criterion whose bad condition holds.
    pub fn is_breach(&self) -> bool {
        self.kind == CriterionKind::Rollback && self.verdict == Verdict::Fail
    }

    /// `error_rate gt 0.02: value 0.05 over 1000 samples`
    pub fn describe(&self) -> String {
        let facts = match self.value {
            Some(v) => format!("value {v} over {} samples", self.samples),
            None => "no reading".to_owned(),
        };
        format!(
            "{} {} {}: {facts} (min {} samples)",
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

    /// Drops the metrics for which `keep` does not hold (after a plan revision).
    pub fn retain(&mut self, keep: impl Fn(&MetricName) -> bool) {
        self.metrics.retain(|m, _| keep(m));
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

/// Judges `criterion` on the latest recorded reading of its metric.
pub fn evaluate(
    criterion: &Criterion,
    kind: CriterionKind,
    readings: &StageReadings,
) -> Evaluation {
    let reading = readings.latest(&criterion.metric);
    let (value, samples) = reading.map_or((None, 0), |r| (Some(r.value), r.samples));
    let verdict = match reading {
        None => Verdict::Inconclusive,
        Some(r) if r.samples < criterion.min_samples => Verdict::Inconclusive,
        Some(r) => {
            let holds = criterion.comparator.holds(r.value, criterion.threshold);
            match (kind, holds) {
                (CriterionKind::Success, true) | (CriterionKind::Rollback, false) => Verdict::Pass,
                (CriterionKind::Success, false) | (CriterionKind::Rollback, true) => Verdict::Fail,
            }
        }
    };
    Evaluation {
        kind,
        metric: criterion.metric.clone(),
        comparator: criterion.comparator,
        threshold: criterion.threshold,
        min_samples: criterion.min_samples,
        value,
        samples,
        verdict,
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
